"""A worker killed outright is out of the presence at once (inference_worker/deathwatch.py), so
a question asked after its death gets the fallback at once instead of after the heartbeat's
TTL. A real worker process (`manage.py run_synthetic_worker`: the synthetic token source, as
the model's speed plays no part), the real Redis and the customer socket through the real
router."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from chat.models import Message
from inference_worker import pool
from inference_worker.presence import KEY
from runtime.redis_client import get_redis
from tests.processes import pid_alive

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

ROOT = Path(__file__).resolve().parents[2]
# docs/operations.md's promise: a question asked while no live worker can take it gets the
# fallback within this time.
FALLBACK_WITHIN = 2.0


async def live_within(expected: int, timeout: float) -> float:
    """Seconds until the presence counts `expected` live workers; fails after timeout."""
    started = time.monotonic()
    while await pool.live_workers(get_redis()) != expected:
        assert time.monotonic() - started < timeout, f"not {expected} live within {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def start_worker(name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "run_synthetic_worker",
            "--tokens-per-second",
            "2000",
            "--name",
            name,
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "REDIS_URL": settings.REDIS_URL,
            "INFERENCE_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        },
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.fixture
def worker_process():
    process = start_worker(f"doomed-{os.getpid()}")
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


async def test_a_question_after_the_only_worker_is_killed_gets_the_fallback_at_once(
    worker_process, connect
):
    await live_within(1, timeout=60)  # the worker is up and has announced itself
    client, _ = await connect()
    await client.send({"type": "message", "text": "Hello?", "client_id": "before"})
    *_, done = await client.answer(timeout=30)
    assert done["fallback"] is False  # the worker answers while it lives

    os.kill(worker_process.pid, signal.SIGKILL)  # the worker alone, as `kill -9 PID` does
    killed = time.monotonic()
    gone_in = await live_within(0, timeout=settings.INFERENCE["WORKER_TTL_SECONDS"] + 5)
    # Out of the presence by its deathwatch, not by its heartbeat's expiry.
    assert gone_in < settings.INFERENCE["WORKER_TTL_SECONDS"] / 2, gone_in
    assert await get_redis().zscore(KEY, f"doomed-{os.getpid()}") is None

    await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - killed)))  # asked 1 s after
    asked = time.monotonic()
    await client.send({"type": "message", "text": "Still there?", "client_id": "after"})
    *_, done = await client.answer(timeout=10)
    took = time.monotonic() - asked
    assert done["fallback"] is True and done["finish_reason"] == "unavailable", done
    assert took <= FALLBACK_WITHIN, took
    assert await Message.objects.filter(role="bot", is_fallback=True).acount() == 1
    print(
        f"\nworker killed: out of the presence {gone_in * 1000:.0f} ms later; a question asked "
        f"1 s after the kill got the fallback in {took * 1000:.0f} ms"
    )


def test_the_deathwatch_ends_with_its_worker_and_leaves_nothing(worker_process) -> None:
    """It is in the worker's process group, and ends by itself once the worker has."""
    deadline = time.monotonic() + 60
    while len(members := _group(worker_process.pid)) < 2:  # the worker and its deathwatch
        assert time.monotonic() < deadline, members
        time.sleep(0.05)
    os.kill(worker_process.pid, signal.SIGKILL)
    worker_process.wait(10)
    deadline = time.monotonic() + 5
    while alive := [pid for pid in members if pid_alive(pid)]:
        assert time.monotonic() < deadline, alive
        time.sleep(0.02)


def _group(pgid: int) -> list[int]:
    from devstack.stack import live_group_members

    return live_group_members(pgid)
