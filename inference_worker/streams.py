"""The state of a request a worker has taken: the answer run's channel and web process it
answers to, when it last sent (keepalives go by it), and whether its final event is on its way."""

import asyncio
from dataclasses import dataclass, field

from inference_worker import protocol


@dataclass(eq=False)
class Stream:
    """One request from the moment it is taken until its last event is sent."""

    request: protocol.InferenceRequest
    task: asyncio.Task
    process: str  # the reply channel's web process: the part before '!'
    last_sent: float  # monotonic time of the last event sent to the consumer
    ending: bool = False  # the final event is on its way: no keepalive after it
    keepalive: asyncio.Task | None = field(default=None)

    @property
    def request_id(self) -> str:
        return self.request["request_id"]


def process_of(reply_channel: str) -> str:
    return reply_channel.partition("!")[0]
