import asyncio
import time

import pytest

from inference_worker.coalesce import Chunk, adaptive_interval, coalesce


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


async def test_text_waiting_when_the_source_fails_is_delivered_before_the_failure():
    """A dead engine or remote server: the partial answer kept is all the text it gave."""

    async def failing():
        yield Chunk(text="Hello", token_count=1)
        yield Chunk(text=" there", token_count=1)
        raise ConnectionError("server gone")

    got = []
    with pytest.raises(ConnectionError):
        # A long interval: " there" is still waiting when the source fails.
        async for chunk in coalesce(failing(), interval=10):
            got.append(chunk.text)
    assert got == ["Hello", " there"]


def test_the_interval_grows_with_the_streams_of_one_process_within_a_bound():
    base = 0.03
    assert adaptive_interval(1, base) == base  # a quiet process: the configured interval
    assert adaptive_interval(60, base) == base  # up to ~2,000 frames/s per process
    assert adaptive_interval(100, base) == pytest.approx(0.05)
    assert adaptive_interval(200, base) == pytest.approx(0.1)
    assert adaptive_interval(5000, base) == pytest.approx(0.1)  # never past the bound
    intervals = [adaptive_interval(n, base) for n in range(0, 400, 7)]
    assert intervals == sorted(intervals)
    assert adaptive_interval(500, 0.2) == 0.2  # a base above the bound is kept


async def test_the_interval_is_read_as_the_stream_runs():
    interval = [0.001]
    chunks = [Chunk(text=str(i % 10), token_count=1) for i in range(40)]

    async def loaded_halfway():
        for index, chunk in enumerate(chunks):
            await asyncio.sleep(0.005)
            if index == 20:  # the process got busy while this stream ran
                interval[0] = 10.0
            yield chunk

    out = await collect(coalesce(loaded_halfway(), interval=lambda: interval[0]))
    assert "".join(c.text for c in out) == "".join(c.text for c in chunks)
    # Before: nearly a frame per chunk. After: everything waits for the end of the stream.
    assert len(out) >= 15
    assert out[-1].token_count >= 19
