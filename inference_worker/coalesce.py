"""Merging the engine's token deltas into fewer, larger channel-layer messages.

The first chunk goes out at once (time to first token is what a customer feels), then at most
one message per interval: at ~30 tok/s per stream and dozens of streams, one Redis message per
token would cost more than the tokens themselves. Text never waits longer than the interval:
a timer flushes a partly filled buffer even when the engine pauses.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass


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


async def coalesce(source: AsyncIterator[Chunk], interval: float) -> AsyncIterator[Chunk]:
    iterator = aiter(source)
    pending: Chunk | None = None
    last_flush = float("-inf")
    next_item = asyncio.ensure_future(anext(iterator))
    try:
        while True:
            timeout = None
            if pending is not None:
                timeout = max(0.0, last_flush + interval - time.monotonic())
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
            next_item = asyncio.ensure_future(anext(iterator))
            if pending is None:
                pending = Chunk(text="")
            pending.merge(chunk)
            if time.monotonic() - last_flush >= interval:
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
