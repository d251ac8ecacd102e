import asyncio
import time

from inference_worker.coalesce import Chunk, coalesce


async def source(items, gap=0.0, log=None):
    for item in items:
        if gap:
            await asyncio.sleep(gap)
        if log is not None:
            log.append(time.monotonic())
        yield item


async def collect(iterator):
    return [chunk async for chunk in iterator]


async def test_text_and_counts_are_preserved():
    chunks = [Chunk(text=c, token_count=1) for c in "hello world"]
    chunks[-1].finish_reason = "stop"
    out = await collect(coalesce(source(chunks), interval=0.05))
    assert "".join(c.text for c in out) == "hello world"
    assert sum(c.token_count for c in out) == 11
    assert out[-1].finish_reason == "stop"


async def test_first_chunk_goes_out_at_once_then_batches():
    chunks = [Chunk(text=str(i % 10), token_count=1) for i in range(40)]
    out = await collect(coalesce(source(chunks, gap=0.005), interval=0.05))
    assert out[0].text == "0"  # not held back for the interval
    # 40 tokens over ~0.2 s at one message per 50 ms: far fewer messages than tokens.
    assert len(out) <= 10
    assert "".join(c.text for c in out) == "".join(c.text for c in chunks)


async def test_waiting_text_is_flushed_when_the_engine_pauses():
    async def stalling():
        yield Chunk(text="a")
        yield Chunk(text="b")  # arrives inside the interval: buffered
        await asyncio.sleep(0.5)
        yield Chunk(text="c")

    received = []
    started = time.monotonic()
    async for chunk in coalesce(stalling(), interval=0.05):
        received.append((chunk.text, time.monotonic() - started))
    assert [text for text, _ in received] == ["a", "b", "c"]
    assert received[1][1] < 0.3  # "b" did not wait for "c"


async def test_closing_the_stream_closes_the_source():
    closed = asyncio.Event()

    async def endless():
        try:
            while True:
                yield Chunk(text="x")
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    stream = coalesce(endless(), interval=0.01)
    await anext(stream)
    await stream.aclose()
    assert closed.is_set()
