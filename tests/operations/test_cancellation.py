"""A cancelled loop stops even when redis-py loses the cancellation (runtime.cancellation).

redis-py can swallow a CancelledError that lands mid-command: the command returns, or fails
with a connection error. These stand-ins do exactly that, so each test fails (its task never
ends) when a loop forgets to check.
"""

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from inference_worker import redis_retry
from runtime import broadcast


class SwallowingLayer:
    """A channel layer whose group_send, like redis-py, completes when cancelled."""

    def __init__(self):
        self.sending = asyncio.Event()
        self.sent: list[tuple[str, dict]] = []
        self.lost = 0

    async def group_send(self, group: str, event: dict) -> None:
        self.sending.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if self.lost:  # only the first is lost: a failing test still ends
                raise
            self.lost += 1  # the cancellation is lost here, as redis-py loses it
        self.sent.append((group, event))


async def test_the_after_commit_sender_stops_when_cancelled_mid_send(monkeypatch):
    layer = SwallowingLayer()
    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: layer)
    loop = asyncio.get_running_loop()
    broadcast._enqueue(loop, [("conversation.1", {"type": "conv.status"})])
    (sender,) = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_sender"]
    await asyncio.wait_for(layer.sending.wait(), 5)

    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(sender, 5)
    assert layer.sent == [("conversation.1", {"type": "conv.status"})]  # the send completed
    assert loop not in broadcast._queues  # a new sender starts with the next event


async def test_stopping_sends_what_is_queued_then_ends_the_sender(monkeypatch):
    """A loop about to close (a test's, a stopping process's) lets its queued events go out,
    and leaves no sender to be destroyed pending with it."""
    sent = []

    class RecordingLayer:
        async def group_send(self, group: str, event: dict) -> None:
            await asyncio.sleep(0.01)
            sent.append(group)

    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: RecordingLayer())
    loop = asyncio.get_running_loop()
    broadcast._enqueue(loop, [("a", {"type": "x"}), ("b", {"type": "x"})])
    broadcast._enqueue(loop, [("c", {"type": "x"})])
    (sender,) = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_sender"]

    await broadcast.stop()
    assert sent == ["a", "b", "c"]
    assert sender.done()
    assert loop not in broadcast._queues and loop not in broadcast._senders
    await broadcast.stop()  # nothing left to stop: a no-op


async def test_a_worker_loop_whose_redis_call_turns_the_cancellation_into_an_error_stops():
    blocked = asyncio.Event()
    lost = []

    async def read_like_redis_py() -> None:
        blocked.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if lost:  # only the first is lost: a failing test still ends
                raise
            lost.append(True)
            raise RedisConnectionError("Connection closed by server.") from None

    async def a_workers_loop() -> None:  # the shape of InferenceWorker's loops
        retry = redis_retry.RedisRetry("test loop", lambda: None)
        while True:
            try:
                await read_like_redis_py()
            except RedisConnectionError as exc:
                await retry.failed(exc)

    task = asyncio.create_task(a_workers_loop())
    await asyncio.wait_for(blocked.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
