"""The worker outlives a Redis restart: its own Redis server is stopped and started again on
the same unix socket while the worker runs on the synthetic token source."""

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from devstack.localredis import start_redis
from inference_worker import pool, protocol
from inference_worker.synthetic import SyntheticEngine
from inference_worker.worker import InferenceWorker
from runtime.channel_layer import DeskChannelLayer
from tests.waiting import events_until_end, poll, sample

SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 400, "frequency_penalty": 0.0}


def request(reply: str, request_id: str) -> dict:
    now = time.time()
    return protocol.inference_request(
        request_id=request_id,
        reply_channel=reply,
        messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        sampling=SAMPLING,
        deadline=now + 60,
        queued_at=now,
        start_by=now + 30,
    )


@pytest.fixture
def run_dir():
    # A short directory of our own, so the socket path is the same after the restart
    # (start_redis moves a socket whose path is too long to a fresh temporary directory).
    path = Path(tempfile.mkdtemp(prefix="cs-restart-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def layer_for(url: str) -> DeskChannelLayer:
    return DeskChannelLayer(hosts=[{"address": url, "socket_timeout": 30}])


async def test_the_worker_survives_a_redis_restart(run_dir, caplog):
    caplog.set_level(logging.INFO, logger="inference_worker")
    server = start_redis(run_dir)
    url = server.url
    engine = SyntheticEngine(tokens_per_second=40)
    engine.reply = lambda prompt: "slow " * 60 if "slow" in prompt else "Back again."
    worker_redis = aioredis.Redis.from_url(url, decode_responses=True)
    worker = InferenceWorker(
        engine=engine,
        channel_layer=layer_for(url),
        redis=worker_redis,
        channel=settings.INFERENCE["CHANNEL"],
        control_group=settings.INFERENCE["CONTROL_GROUP"],
        max_concurrency=4,
        coalesce_ms=30,
        heartbeat_seconds=0.5,
        keepalive_seconds=1,
        name="restart-worker",
    )
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(ready=ready.set))
    client = layer_for(url)
    try:
        await asyncio.wait_for(ready.wait(), 5)
        # An answer streaming while Redis goes away.
        reply = await client.new_channel()
        slow = request(reply, "slow")
        slow["messages"][-1]["content"] = "slow please"
        await client.send(settings.INFERENCE["CHANNEL"], slow)
        assert (await client.receive(reply))["type"] == "inference.start"
        lost_before = sample("cs_worker_requests_total", outcome="redis_lost")

        server.stop()
        await asyncio.sleep(1.5)  # every loop meets the outage and backs off
        assert not task.done()
        server = start_redis(run_dir)
        assert server.url == url

        # The running answer could not be delivered: aborted in the engine and counted.
        assert "slow" in engine.aborted
        assert sample("cs_worker_requests_total", outcome="redis_lost") == lost_before + 1

        # A fresh client (a restarted web process) gets a whole answer through the worker.
        fresh = layer_for(url)
        reply = await fresh.new_channel()
        await fresh.send(settings.INFERENCE["CHANNEL"], request(reply, "after"))
        start, *deltas, done = await events_until_end(fresh, reply, timeout=15)
        assert start["type"] == "inference.start" and done["type"] == "inference.done"
        assert "".join(d["text"] for d in deltas) == "Back again."

        # The restarted Redis knows the worker again: presence, slots, and the control group
        # (a cancel reaches it).
        check = aioredis.Redis.from_url(url, decode_responses=True)
        assert await pool.live_workers(check) == 1
        assert (await pool.capacity(check, settings.INFERENCE["CHANNEL"])).counts() == (1, 4, 0)
        await check.aclose()
        reply = await fresh.new_channel()
        await fresh.send(
            settings.INFERENCE["CHANNEL"], {**slow, "request_id": "slow2", "reply_channel": reply}
        )
        assert (await fresh.receive(reply))["type"] == "inference.start"
        await fresh.group_send(
            settings.INFERENCE["CONTROL_GROUP"],
            protocol.inference_cancel(request_id="slow2", reason="test"),
        )
        await poll(lambda: "slow2" in engine.aborted)

        assert not task.done()
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "Redis unreachable" in r.getMessage()
        ]
        # One line per loop and outage, not one per retry.
        assert 1 <= len(warnings) <= 3, warnings
        await fresh.close_pools()
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)
        await client.close_pools()
        await worker_redis.aclose()
        server.stop()
