"""What a worker sends to the answer runs that asked: a request's events through the mailbox
of its web process, retried while that channel is full; the best-effort last word; keepalives;
and the reply to a malformed request. A send that cannot be made ends in a named exception
(Overloaded, RedisLost), which the request turns into its outcome.
"""

import asyncio
import logging
import time

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from pydantic import ValidationError

from inference_worker import metrics, protocol
from inference_worker.mailbox import Mailbox
from inference_worker.protocol import InferenceErrorCode as Code
from inference_worker.redis_retry import REDIS_DOWN
from inference_worker.streams import Stream
from runtime.cancellation import raise_if_cancelled

log = logging.getLogger("inference_worker")

# A consumer's channel that is full means its web process reads slower than the workers
# write (overload), not that it died (then the consumer's cancel or the channel's expiry
# ends it): wait for it to drain for ~1 s in all before giving up on the answer.
_FULL_CHANNEL_DELAYS = (0.05, 0.1, 0.2, 0.3, 0.4)
# A last error frame to a consumer is worth this long at most: its deadline covers the rest.
LAST_WORD_TIMEOUT = 2.0


class RedisLost(Exception):
    """A send to the consumer failed because Redis did not answer."""


class Overloaded(Exception):
    """The consumer's channel stayed full through every retry."""


class Replies:
    """A worker's sends to the answer runs, over one channel layer."""

    def __init__(self, layer: BaseChannelLayer):
        self.layer = layer
        # Stream events bound for each web process, bundled when they meet.
        self.mailboxes: dict[str, Mailbox] = {}

    async def send(self, stream: Stream, event: dict, *, final: bool = False) -> None:
        if final:
            await self.end_keepalive(stream)
        reply = stream.request["reply_channel"]
        delays = iter(_FULL_CHANNEL_DELAYS)
        while True:
            try:
                await self._mailbox(stream.process).send(reply, event)
                break
            except ChannelFull:
                delay = next(delays, None)
                if delay is None:
                    raise Overloaded from None
                await asyncio.sleep(delay)
            except REDIS_DOWN as exc:
                raise RedisLost from exc
        stream.last_sent = time.monotonic()
        # A cancellation redis-py lost would let a cancelled stream run on until its next
        # await happens to notice.
        raise_if_cancelled()

    async def send_quietly(
        self,
        request: protocol.InferenceRequest,
        event: dict,
        *,
        stream: Stream | None = None,
        failure_level: int = logging.WARNING,
    ) -> None:
        """Best effort, once, briefly: the consumer's deadline covers a lost last word.
        `failure_level` is lowered where the warning about the cause is logged already."""
        try:
            async with asyncio.timeout(LAST_WORD_TIMEOUT):
                if stream is not None:
                    await self.end_keepalive(stream)
                await self.layer.send(request["reply_channel"], event)
        except Exception as exc:  # noqa: BLE001
            log.log(
                failure_level,
                "could not send %s for %s (%s)",
                event["type"],
                request["request_id"],
                exc.__class__.__name__,
            )

    async def end_keepalive(self, stream: Stream) -> None:
        """No keepalive may follow the final event: stop them, and let one under way land
        first. (asyncio.wait, unlike awaiting the task, leaves it running if we are
        cancelled meanwhile.)"""
        stream.ending = True
        if stream.keepalive is not None and not stream.keepalive.done():
            await asyncio.wait({stream.keepalive})

    async def send_keepalive(self, stream: Stream) -> None:
        try:
            await self.layer.send(
                stream.request["reply_channel"],
                protocol.inference_keepalive(request_id=stream.request_id),
            )
            metrics.KEEPALIVES.inc()
        except (ChannelFull, *REDIS_DOWN) as exc:
            # The request's own next send meets the same trouble and deals with it.
            log.debug("keepalive for %s not sent: %r", stream.request_id, exc)

    async def reject_malformed(self, message: dict, exc: ValidationError) -> None:
        metrics.REQUESTS.labels("bad_request").inc()
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
        log.warning("malformed request dropped (fields: %s)", fields)
        reply = message.get("reply_channel") if isinstance(message, dict) else None
        if isinstance(reply, str) and reply:
            try:
                await self.layer.send(
                    reply,
                    protocol.inference_error(
                        request_id=str(message.get("request_id", ""))[:64],
                        code=Code.BAD_REQUEST,
                        message=f"Malformed inference request: {fields}",
                    ),
                )
            except Exception:  # noqa: BLE001 - a bad reply channel is the sender's problem
                log.warning("could not report the malformed request to %r", reply[:100])

    async def reject_request(self, request: protocol.InferenceRequest, reason: str) -> None:
        """A well-formed request whose parts do not agree (its tools and tool choice)."""
        metrics.REQUESTS.labels("bad_request").inc()
        log.warning("request %s refused: %s", request["request_id"], reason)
        await self.send_quietly(
            request,
            protocol.inference_error(
                request_id=request["request_id"], code=Code.BAD_REQUEST, message=reason
            ),
        )

    def _mailbox(self, process: str) -> Mailbox:
        mailbox = self.mailboxes.get(process)
        if mailbox is None:
            mailbox = self.mailboxes[process] = Mailbox(
                self.layer, on_idle=lambda: self.mailboxes.pop(process, None)
            )
        return mailbox
