"""Sending group events after the transaction that caused them commits (as Zulip does):
nobody hears of a change that was rolled back, and a Redis hiccup never undoes a write.

Services run in a database thread. When that thread serves an event loop (Daphne, a worker),
the events are handed to the loop and the thread goes on at once: waiting there for Redis would
hold every other conversation's database work behind one round trip (on SQLite all of a
process's database work shares that one thread; measured, the wait was most of what storing a
finished answer cost under 150 streams). One sender task per loop sends them in commit order.
Elsewhere (management commands, shells) they are sent before the call returns.
"""

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import RedisError

from runtime.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

Pairs = Iterable[tuple[str, dict]]

# One queue and one sender task per event loop that services were called from.
_queues: dict[asyncio.AbstractEventLoop, asyncio.Queue] = {}
_senders: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


def after_commit(*pairs: tuple[str, dict]) -> None:
    """Send each (group, event) once the current transaction commits (at once outside one).
    For synchronous code only: services run in a thread under database_sync_to_async."""
    transaction.on_commit(lambda: _send_soon(pairs))


def _send_soon(pairs: Pairs) -> None:
    loop = _calling_loop()
    if loop is None:
        async_to_sync(_send)(pairs)
        return
    try:
        loop.call_soon_threadsafe(_enqueue, loop, pairs)
    except RuntimeError:  # the loop has closed (the process is stopping): send from here
        async_to_sync(_send)(pairs)


def _calling_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop that called this thread through sync_to_async, if any."""
    try:
        asyncio.get_running_loop()
        return None  # called on a loop's own thread: a sync caller inside async code
    except RuntimeError:
        pass
    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(local, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


def _enqueue(loop: asyncio.AbstractEventLoop, pairs: Pairs) -> None:
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = asyncio.Queue()
        task = _senders[loop] = loop.create_task(_sender(queue))

        def forget(_task: asyncio.Task) -> None:
            _queues.pop(loop, None)
            _senders.pop(loop, None)

        task.add_done_callback(forget)
    queue.put_nowait(pairs)


async def _sender(queue: asyncio.Queue) -> None:
    while True:
        pairs = await queue.get()
        try:
            await _send(pairs)
        finally:
            queue.task_done()
        raise_if_cancelled()  # else a cancellation redis-py lost leaves this waiting for good


async def flush() -> None:
    """Wait until the events handed to this loop so far are sent (a stopping process)."""
    queue = _queues.get(asyncio.get_running_loop())
    if queue is not None:
        await queue.join()


_STOP_WAIT_SECONDS = 2.0


async def stop() -> None:
    """Send what was handed to this loop so far (for at most _STOP_WAIT_SECONDS), then end its
    sender: the loop is about to close, and a sender left waiting would be destroyed pending,
    mid-send perhaps, when the loop is collected."""
    loop = asyncio.get_running_loop()
    queue, sender = _queues.get(loop), _senders.get(loop)
    if queue is None or sender is None:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(queue.join(), _STOP_WAIT_SECONDS)
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender


async def _send(pairs: Pairs) -> None:
    layer = get_channel_layer()
    for group, event in pairs:
        try:
            await layer.group_send(group, event)
        except (RedisError, OSError) as exc:  # the write stands; live views catch up
            log.warning(
                "could not send %s to %s (%s: %s)",
                event.get("type"),
                group,
                type(exc).__name__,
                exc,
            )
        except Exception:  # a bug: the write still stands
            log.exception("could not send %s to %s", event.get("type"), group)
