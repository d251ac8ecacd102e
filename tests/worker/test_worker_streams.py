"""A running request's life in the worker: keepalives, admission (start_by, queue wait),
a consumer's full channel, and coalescing that follows the load of the consumer's process.
Real Redis, the desk's channel layer, the synthetic token source as engine."""

import asyncio
import contextlib
import logging
import time

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from inference_worker import metrics, pool, protocol
from inference_worker.synthetic import SyntheticEngine
from inference_worker.worker import InferenceWorker
from runtime.channel_layer import DeskChannelLayer
from runtime.redis_client import get_redis
from tests.waiting import poll, sample

SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 1000, "frequency_penalty": 0.0}
CHANNEL = settings.INFERENCE["CHANNEL"]


def request(reply, request_id="r1", **times):
    now = time.time()
    return protocol.inference_request(
        request_id=request_id,
        reply_channel=reply,
        messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        sampling=SAMPLING,
        deadline=times.get("deadline", now + 30),
        queued_at=times.get("queued_at", now),
        start_by=times.get("start_by", now + 20),
    )


async def until_end(layer, channel, timeout=10):
    """(event, arrival time) pairs up to and including done or error."""
    got = []
    async with asyncio.timeout(timeout):
        while True:
            event = await layer.receive(channel)
            got.append((event, time.monotonic()))
            if event["type"] in ("inference.done", "inference.error"):
                return got


@contextlib.asynccontextmanager
async def running(worker):
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(ready=ready.set))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield worker
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


def make_worker(engine, layer=None, **options):
    defaults = dict(
        max_concurrency=4,
        coalesce_ms=30,
        heartbeat_seconds=0.5,
        keepalive_seconds=2.0,
        name="stream-worker",
    )
    return InferenceWorker(
        engine=engine,
        channel_layer=layer or get_channel_layer(),
        redis=get_redis(),
        channel=CHANNEL,
        control_group=settings.INFERENCE["CONTROL_GROUP"],
        **{**defaults, **options},
    )


# --- keepalive ----------------------------------------------------------------------------------


async def test_a_silent_request_gets_keepalives_until_its_first_token():
    engine = SyntheticEngine(reply="Finally here.", first_token_delay=1.3)
    layer = get_channel_layer()
    reply = await layer.new_channel()
    async with running(make_worker(engine, keepalive_seconds=0.3)):
        sent = time.monotonic()
        await layer.send(CHANNEL, request(reply))
        got = await until_end(layer, reply)
    types = [event["type"] for event, _ in got]
    assert types[0] == "inference.start" and types[-1] == "inference.done"
    first_delta = types.index("inference.delta")
    # 1.3 s of prefill at one keepalive per 0.3 s of silence (checked every 0.075 s).
    keepalives = [t for t in types[:first_delta] if t == "inference.keepalive"]
    assert 2 <= len(keepalives) <= 5, types
    assert all(
        e == {"type": "inference.keepalive", "request_id": "r1"}
        for e, _ in got
        if e["type"] == "inference.keepalive"
    )
    # Never a gap of silence much longer than the keepalive interval.
    times = [sent] + [at for _, at in got]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 0.3 + 0.3
    # Nothing after the final event.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.6):
            await layer.receive(reply)


async def test_a_streaming_request_sends_no_keepalives():
    engine = SyntheticEngine(reply="word " * 30, tokens_per_second=100)  # a delta every 50 ms
    layer = get_channel_layer()
    reply = await layer.new_channel()
    async with running(make_worker(engine, keepalive_seconds=0.3)):
        await layer.send(CHANNEL, request(reply))
        got = await until_end(layer, reply)
    assert "inference.keepalive" not in [event["type"] for event, _ in got]


# --- admission ----------------------------------------------------------------------------------


async def test_a_request_taken_after_its_start_by_is_dropped_without_engine_work():
    engine = SyntheticEngine()
    layer = get_channel_layer()
    reply = await layer.new_channel()
    expired_before = sample("cs_worker_requests_total", outcome="expired")
    waits_before = sample("cs_worker_queue_wait_seconds_count")
    async with running(make_worker(engine)):
        # Still inside its deadline, but the consumer gave up waiting for a start.
        now = time.time()
        await layer.send(CHANNEL, request(reply, "late", queued_at=now - 5, start_by=now - 1))
        ((error, _),) = await until_end(layer, reply)
    assert error["type"] == "inference.error" and error["code"] == "expired"
    assert error["request_id"] == "late"
    assert engine.prompts == {}  # no tokenizer, no engine
    assert sample("cs_worker_requests_total", outcome="expired") == expired_before + 1
    assert sample("cs_worker_queue_wait_seconds_count") == waits_before + 1


async def test_queue_wait_is_measured_from_queued_at():
    engine = SyntheticEngine()
    layer = get_channel_layer()
    reply = await layer.new_channel()
    before = sample("cs_worker_queue_wait_seconds_sum")
    slow_bucket_before = sample("cs_worker_queue_wait_seconds_bucket", le="2.0")
    async with running(make_worker(engine)):
        await layer.send(CHANNEL, request(reply, queued_at=time.time() - 3))
        assert (await until_end(layer, reply))[-1][0]["type"] == "inference.done"
    waited = sample("cs_worker_queue_wait_seconds_sum") - before
    assert 3 <= waited < 4
    assert sample("cs_worker_queue_wait_seconds_bucket", le="2.0") == slow_bucket_before


async def test_the_heartbeat_publishes_the_queue_length_and_this_workers_slots():
    engine = SyntheticEngine(reply="slow " * 100, tokens_per_second=50)
    layer = get_channel_layer()
    reply = await layer.new_channel()
    async with running(make_worker(engine, max_concurrency=1, heartbeat_seconds=0.2)) as worker:
        for index in range(4):
            await layer.send(CHANNEL, request(reply, f"q{index}"))
        # One runs, three wait for the only slot.
        await poll(lambda: worker.running and metrics.QUEUE_LENGTH._value.get() == 3)
        assert (await pool.capacity(get_redis(), CHANNEL)).counts() == (1, 1, 3)


async def test_a_worker_redis_forgot_rejoins_its_control_group_at_the_next_beat():
    """A Redis that lost its data (restarted without persistence) answers at once: no loop
    sees an error, and only the beat, finding the worker new, can tell it to rejoin."""
    engine = SyntheticEngine(reply="slow " * 100, tokens_per_second=20)
    layer = get_channel_layer()
    redis = get_redis()
    reply = await layer.new_channel()
    async with running(make_worker(engine, heartbeat_seconds=0.2)) as worker:
        await redis.flushdb()
        await poll(lambda: pool.live_workers(redis))  # the next beat
        group_key = layer._group_key(settings.INFERENCE["CONTROL_GROUP"])
        await poll(lambda: redis.zcard(group_key))  # the membership, right after it
        await layer.send(CHANNEL, request(reply, "r1"))
        await poll(lambda: "r1" in worker.running)
        await layer.group_send(
            settings.INFERENCE["CONTROL_GROUP"],
            protocol.inference_cancel(request_id="r1", reason="test"),
        )
        await poll(lambda: not worker.running)
    assert engine.running_requests() == 0


async def test_the_keepalive_ticker_sleeps_while_nothing_runs_and_wakes_for_a_request():
    engine = SyntheticEngine(reply="Finally here.", first_token_delay=0.8)
    layer = get_channel_layer()
    reply = await layer.new_channel()
    async with running(make_worker(engine, keepalive_seconds=0.2)) as worker:
        assert not worker._busy.is_set()  # the ticker waits for this before every tick
        for request_id in ("r1", "r2"):
            await layer.send(CHANNEL, request(reply, request_id))
            await poll(lambda: worker._busy.is_set())
            got = await until_end(layer, reply)
            await poll(lambda: not worker._busy.is_set())
            # Asleep in between, and still on time for the next one's silence.
            assert any(event["type"] == "inference.keepalive" for event, _ in got), got


# --- a consumer's full channel ------------------------------------------------------------------


def small_reply_layer(capacity):
    """The worker's layer, where every process-local channel holds only `capacity` messages."""
    return DeskChannelLayer(
        hosts=settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"],
        channel_capacity={"*!*": capacity},
    )


async def test_a_reply_channel_that_stays_full_aborts_the_answer_as_overloaded(caplog):
    engine = SyntheticEngine(reply="word " * 100, tokens_per_second=2000)
    layer = get_channel_layer()
    reply = await layer.new_channel()
    overloaded_before = sample("cs_worker_requests_total", outcome="overloaded")
    async with running(make_worker(engine, layer=small_reply_layer(3), coalesce_ms=1)) as worker:
        await layer.send(CHANNEL, request(reply, "full"))  # and nobody reads the reply
        started = time.monotonic()
        await poll(lambda: "full" in engine.aborted)
        gave_up_after = time.monotonic() - started
        assert not worker.running
    assert 0.9 < gave_up_after < 3  # it retried for ~1 s before giving up
    assert sample("cs_worker_requests_total", outcome="overloaded") == overloaded_before + 1
    assert [r.getMessage() for r in caplog.records if "stayed full" in r.getMessage()]
    # What did get through is the start of the answer, in order; no ending could follow.
    first = [await layer.receive(reply) for _ in range(3)]
    assert [e["type"] for e in first] == ["inference.start", "inference.delta", "inference.delta"]


async def test_a_reply_channel_that_drains_in_time_loses_nothing():
    engine = SyntheticEngine(reply="word " * 20, tokens_per_second=2000)
    layer = get_channel_layer()
    reply = await layer.new_channel()
    async with running(make_worker(engine, layer=small_reply_layer(3), coalesce_ms=1)):
        await layer.send(CHANNEL, request(reply))
        got = []
        async with asyncio.timeout(10):
            while not got or got[-1]["type"] != "inference.done":
                await asyncio.sleep(0.1)  # a slow reader: the channel is full most of the time
                got.append(await layer.receive(reply))
    assert "".join(e.get("text", "") for e in got) == ("word " * 20).rstrip()
    assert engine.aborted == []


# --- coalescing follows the consumer's process's load ------------------------------------------


async def delta_count(streams_in_process: int) -> int:
    engine = SyntheticEngine(reply="word " * 40, tokens_per_second=500)  # a word per 10 ms
    layer = get_channel_layer()
    reply = await layer.new_channel()
    worker = make_worker(engine)
    # Other answers to the same web process, as far as the interval is concerned.
    worker.streams_per_process[reply.partition("!")[0]] = streams_in_process
    async with running(worker):
        await layer.send(CHANNEL, request(reply))
        got = await until_end(layer, reply)
    deltas = [event for event, _ in got if event["type"] == "inference.delta"]
    assert (
        "".join(d["text"] for d in deltas) == ("word " * 40).rstrip()
    )  # the source drops trailing space
    return len(deltas)


async def test_a_busy_process_gets_fewer_larger_frames():
    quiet = await delta_count(0)
    busy = await delta_count(1000)  # the interval is at its 100 ms bound
    # 0.4 s of text: a frame per 30 ms when quiet (~14), per 100 ms when busy (~5).
    assert busy <= 8 and quiet >= busy * 2, (quiet, busy)


# --- one tokenizer pass -------------------------------------------------------------------------


async def test_the_prompt_is_tokenized_once_when_it_fits():
    engine = SyntheticEngine(reply="ok")
    calls = []
    tokenize = engine.prompt_token_ids
    engine.prompt_token_ids = lambda messages: calls.append(1) or tokenize(messages)
    layer = get_channel_layer()
    reply = await layer.new_channel()
    async with running(make_worker(engine)):
        await layer.send(CHANNEL, request(reply))
        done = (await until_end(layer, reply))[-1][0]
    assert len(calls) == 1
    assert done["prompt_tokens"] == len(engine.prompts["r1"])


async def test_a_request_delivered_twice_runs_once(caplog):
    caplog.set_level(logging.WARNING, logger="inference_worker")
    engine = SyntheticEngine(reply="once")
    layer = get_channel_layer()
    reply = await layer.new_channel()
    async with running(make_worker(engine)):
        await layer.send(CHANNEL, request(reply, "twice"))
        await until_end(layer, reply)
        await layer.send(CHANNEL, request(reply, "twice"))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await layer.receive(reply)
    assert list(engine.prompts) == ["twice"]
    assert any("delivered twice" in r.getMessage() for r in caplog.records)


async def test_the_worker_publishes_how_long_its_answers_take():
    engine = SyntheticEngine(reply="word " * 20, tokens_per_second=200)  # ~0.5 s an answer
    layer = get_channel_layer()
    reply = await layer.new_channel()
    async with running(make_worker(engine, max_concurrency=2, heartbeat_seconds=0.1)) as worker:
        assert (await pool.capacity(get_redis(), CHANNEL)).turnover is None
        for index in range(2):
            await layer.send(CHANNEL, request(reply, f"t{index}"))
            await until_end(layer, reply)
        assert 0.3 < worker.turnover < 5

        async def beaten():  # the next heartbeat carries it
            room = await pool.capacity(get_redis(), CHANNEL)
            return room if room.turnover is not None else None

        room = await poll(beaten)
        assert room.turnover == pytest.approx(worker.turnover, rel=0.2)  # a beat may lag one
