"""Merging the engine's token deltas into fewer, larger channel-layer messages.

The first chunk goes out at once (time to first token is what a customer feels), then at most
one message per interval: at ~30 tok/s per stream and dozens of streams, one Redis message per
token would cost more than the tokens themselves. Text never waits longer than the interval:
a timer flushes a partly filled buffer even when the engine pauses.

The interval adapts to load: every stream of one web process lands on that process's one
Redis key and is read back one message per round trip, so frames per process per second, not
per stream, is the cost to hold. `adaptive_interval` keeps a process's frame rate near a
budget by lengthening the interval as its stream count grows, up to a bound a reader does not
notice as stutter (~100 ms: a tenth of a second of ~3 words at a time).
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

# Frames per second one web process is sent before the interval grows: at the base 30 ms
# that is 60 streams, and the 100 ms bound is reached at 200 streams.
PROCESS_FRAMES_PER_SECOND = 2000.0
MAX_INTERVAL = 0.1


def adaptive_interval(
    streams: int,
    base: float,
    *,
    bound: float = MAX_INTERVAL,
    frames_per_second: float = PROCESS_FRAMES_PER_SECOND,
) -> float:
    """Seconds between frames of one stream when `streams` streams go to the same process:
    `base` while the process is lightly loaded, then what keeps it near `frames_per_second`,
    never above `bound` (nor below `base`, should `base` be the larger)."""
    return max(base, min(bound, streams / frames_per_second))


@dataclass
class Chunk:
    text: str
    token_count: int = 0
    finish_reason: str | None = None
    prompt_tokens: int | None = None

    def merge(self, other: "Chunk") -> None:
        self.text += other.text
        self.token_count += other.token_count
        self.finish_reason = other.finish_reason or self.finish_reason
        if other.prompt_tokens is not None:
            self.prompt_tokens = other.prompt_tokens


async def coalesce(
    source: AsyncIterator[Chunk], interval: float | Callable[[], float]
) -> AsyncIterator[Chunk]:
    """`interval` is seconds, or a function read at every decision, so that a stream follows
    the load of its process while it runs."""
    current = interval if callable(interval) else (lambda: interval)
    iterator = aiter(source)
    pending: Chunk | None = None
    last_flush = float("-inf")
    next_item = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            timeout = None
            if pending is not None:
                timeout = max(0.0, last_flush + current() - time.monotonic())
            done, _ = await asyncio.wait({next_item}, timeout=timeout)
            if not done:  # the interval passed with text waiting
                yield pending
                pending, last_flush = None, time.monotonic()
                continue
            try:
                chunk = next_item.result()
            except StopAsyncIteration:
                if pending is not None:
                    yield pending
                return
            except Exception:
                # The source failed (an engine or a remote server died): the text it gave
                # before is delivered first, so the partial answer kept is all of it.
                if pending is not None:
                    flushed, pending = pending, None
                    yield flushed
                raise
            next_item = asyncio.ensure_future(anext(iterator))
            if pending is None:
                pending = Chunk(text="")
            pending.merge(chunk)
            if time.monotonic() - last_flush >= current():
                yield pending
                pending, last_flush = None, time.monotonic()
    finally:
        # Stop the read under way, then close the source, so that a cancelled stream reaches
        # the engine's own cleanup (vLLM aborts a request whose generator is closed).
        if not next_item.done():
            next_item.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
            await next_item
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
