"""The worker's request loop over the real channel layer, on the synthetic token source."""

import asyncio
import time

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from inference_worker import pool, protocol
from runtime.redis_client import get_redis
from tests.waiting import events_until_end, poll

SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "frequency_penalty": 0.0}


async def submit(
    layer,
    reply_channel,
    *,
    request_id="r1",
    messages=None,
    deadline=None,
    start_by=None,
    queued_at=None,
    **extra,
):
    now = time.time()
    request = protocol.inference_request(
        request_id=request_id,
        reply_channel=reply_channel,
        messages=messages
        or [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        sampling=SAMPLING,
        deadline=deadline or now + 30,
        queued_at=queued_at or now,
        start_by=start_by or now + 20,
    )
    request.update(extra)
    await layer.send(settings.INFERENCE["CHANNEL"], request)


async def test_a_request_streams_start_deltas_and_one_done(worker, engine):
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(layer, reply)
    start, *deltas, done = await events_until_end(layer, reply)
    assert start == {
        "type": "inference.start",
        "request_id": "r1",
        "worker": "test-worker",
        "model": "synthetic-token-source",
        "trimmed": 0,
        "passages": 0,
    }
    assert "".join(d["text"] for d in deltas) == "Hello! How can I help you today?"
    assert done["finish_reason"] == "stop" and done["completion_tokens"] == 32
    assert done["prompt_tokens"] == len(engine.prompts["r1"])
    with pytest.raises(asyncio.TimeoutError):  # exactly one ending
        async with asyncio.timeout(0.3):
            await layer.receive(reply)


async def test_worker_announces_itself_while_running(worker):
    assert await pool.live_workers(get_redis()) == 1


@pytest.mark.parametrize(
    "broken",
    [
        {"type": "inference.request", "request_id": "bad1", "reply_channel": "REPLY"},
        {
            "type": "inference.request",
            "request_id": "bad2",
            "reply_channel": "REPLY",
            "messages": "not a list",
            "sampling": SAMPLING,
            "deadline": 1e12,
        },
        {
            "type": "inference.request",
            "request_id": "bad3",
            "reply_channel": "REPLY",
            "messages": [{"role": "hacker", "content": 1}],
            "sampling": SAMPLING,
            "deadline": 1e12,
        },
    ],
)
async def test_malformed_requests_are_refused_and_the_worker_lives_on(worker, broken):
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await layer.send(settings.INFERENCE["CHANNEL"], {**broken, "reply_channel": reply})
    (error,) = await events_until_end(layer, reply)
    assert error["code"] == "bad_request" and error["request_id"] == broken["request_id"]
    await submit(layer, reply, request_id="good")
    assert (await events_until_end(layer, reply))[-1]["type"] == "inference.done"


async def test_a_request_without_reply_channel_is_dropped_and_the_worker_lives_on(worker):
    layer = get_channel_layer()
    await layer.send(settings.INFERENCE["CHANNEL"], {"type": "inference.request", "junk": True})
    reply = await layer.new_channel()
    await submit(layer, reply)
    assert (await events_until_end(layer, reply))[-1]["type"] == "inference.done"


async def test_expired_request_is_not_generated(worker, engine):
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(layer, reply, deadline=time.time() - 1)
    (error,) = await events_until_end(layer, reply)
    assert error["code"] == "expired"
    assert engine.prompts == {}


async def test_cancel_aborts_a_running_request_at_the_engine(worker, engine):
    engine.tokens_per_second = 20
    engine.reply = lambda prompt: "slow " * 40
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(layer, reply)
    assert (await layer.receive(reply))["type"] == "inference.start"
    assert (await layer.receive(reply))["type"] == "inference.delta"
    await layer.group_send(
        settings.INFERENCE["CONTROL_GROUP"],
        protocol.inference_cancel(request_id="r1", reason="test"),
    )
    await poll(lambda: engine.aborted, timeout=2)
    assert engine.aborted == ["r1"] and engine.running_requests() == 0
    assert not worker.running


async def test_cancel_that_arrives_before_its_request_prevents_it(worker, engine):
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await layer.group_send(
        settings.INFERENCE["CONTROL_GROUP"],
        protocol.inference_cancel(request_id="early", reason="test"),
    )
    await poll(lambda: "early" in worker.early_cancels)  # the worker heard it
    await submit(layer, reply, request_id="early")
    await submit(layer, reply, request_id="later")
    (*_, done) = await events_until_end(layer, reply)
    assert done["request_id"] == "later"
    assert list(engine.prompts) == ["later"]


async def test_history_is_trimmed_to_the_budget_keeping_system_and_newest(worker, engine):
    engine.max_model_len = 600  # synthetic tokens are characters: budget 600 - 64
    old = [
        {"role": r, "content": f"old-{i} " + "x" * 100}
        for i, r in enumerate(["user", "assistant"] * 5)
    ]
    messages = [
        {"role": "system", "content": "SYSTEM"},
        *old,
        {"role": "user", "content": "NEWEST"},
    ]
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(layer, reply, messages=messages)
    done = (await events_until_end(layer, reply))[-1]
    prompt = engine.prompts["r1"]
    assert prompt.startswith("<|im_start|>system\nSYSTEM") and "NEWEST" in prompt
    assert "old-0 " not in prompt and "old-9 " in prompt
    assert done["prompt_tokens"] == len(prompt) <= 600 - SAMPLING["max_tokens"]


async def test_newest_message_too_long_for_the_context_is_an_error(worker, engine):
    engine.max_model_len = 200
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(
        layer,
        reply,
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "y" * 300}],
    )
    (start_or_error, *_) = await events_until_end(layer, reply)
    assert start_or_error["type"] == "inference.error"
    assert start_or_error["code"] == "context_overflow"


async def test_concurrent_requests_are_all_answered(worker, engine):
    layer = get_channel_layer()
    replies = [await layer.new_channel() for _ in range(6)]
    for index, reply in enumerate(replies):
        await submit(layer, reply, request_id=f"c{index}")
    results = await asyncio.gather(*(events_until_end(layer, r) for r in replies))
    assert all(events_[-1]["type"] == "inference.done" for events_ in results)


async def test_stopping_the_worker_ends_running_requests_with_an_error(engine):
    from inference_worker.worker import InferenceWorker

    engine.tokens_per_second = 10
    engine.reply = lambda prompt: "slow " * 40
    cfg = settings.INFERENCE
    worker = InferenceWorker(
        engine=engine,
        channel_layer=get_channel_layer(),
        redis=get_redis(),
        channel=cfg["CHANNEL"],
        control_group=cfg["CONTROL_GROUP"],
        max_concurrency=2,
        coalesce_ms=30,
        heartbeat_seconds=1,
        name="w2",
    )
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(ready=ready.set))
    await ready.wait()
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(layer, reply)
    assert (await layer.receive(reply))["type"] == "inference.start"
    worker.stop()
    await asyncio.wait_for(task, 5)
    got = await events_until_end(layer, reply)
    assert got[-1]["type"] == "inference.error"
    assert engine.aborted == ["r1"]
    assert await pool.live_workers(get_redis()) == 0
