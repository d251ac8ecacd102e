"""The real inference worker killed outright (SIGKILL, as by the OOM killer or `kill -9`):
none of vLLM's engine processes outlive it, and the supervisor starts a new worker.

One test, because the model load is the cost. The replacement is stopped while it loads
(SIGTERM, as `make run` stopping then sends it) and leaves no process either. That it becomes
ready and answers, and that a ready worker stops the ordinary way, `tests/e2e/test_faults.py`
checks on the whole product.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from devstack.localredis import start_redis
from devstack.stack import (
    WORKER_READY_PATTERN,
    Backoff,
    ReadyCheck,
    Supervisor,
    live_group_members,
    wait_ready,
)
from tests.e2e.conftest import STACK_MODEL_ENV
from tests.processes import descendants, pid_alive

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive_after(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


@pytest.mark.timeout(900)
def test_a_killed_worker_leaves_no_engine_process_and_is_replaced(tmp_path: Path) -> None:
    redis = start_redis(tmp_path / "redis")
    metrics_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "INFERENCE_METRICS_PORT": str(metrics_port),
        "PYTHONUNBUFFERED": "1",
        "INFERENCE_ENFORCE_EAGER": "true",  # the same engine, without torch.compile
        **STACK_MODEL_ENV,
    }
    ready = ReadyCheck("worker", f"http://127.0.0.1:{metrics_port}/metrics", WORKER_READY_PATTERN)
    out = io.StringIO()
    sup = Supervisor(out=out, stop_timeout=30)
    stop = threading.Event()
    supervising = threading.Thread(target=sup.supervise, args=(stop,), daemon=True)
    new_tree: dict[int, str] = {}
    try:
        worker = sup.start(
            "worker",
            [sys.executable, str(ROOT / "manage.py"), "run_inference_worker"],
            env,
            cwd=ROOT,
            restart=Backoff(first=1),
        )
        wait_ready(sup, [ready], threading.Event(), timeout=600)
        old_pid = worker.pid
        old_tree = descendants(old_pid)
        assert any("EngineCore" in command for command in old_tree.values()), old_tree

        os.kill(old_pid, signal.SIGKILL)  # the leader alone, as `kill -9 PID` does
        killed = time.monotonic()

        # Nothing else signals the old tree meanwhile: the supervisor is not yet tending its
        # children, so it is the lifeline that ends them.
        left = alive_after(list(old_tree), timeout=10)
        assert left == [], {pid: old_tree[pid] for pid in left}
        gone_in = time.monotonic() - killed
        worker.process.wait(5)  # the leader itself: a zombie of ours until reaped
        assert live_group_members(old_pid) == []

        supervising.start()
        deadline = time.monotonic() + 60
        while worker.pid == old_pid:
            assert time.monotonic() < deadline, out.getvalue()[-5000:]
            assert supervising.is_alive(), out.getvalue()[-5000:]
            time.sleep(0.1)
        restarted_in = time.monotonic() - killed
        # Stopped once vLLM's engine process is up, while the model loads in it.
        while True:
            new_tree = descendants(worker.pid)
            if any("EngineCore" in command for command in new_tree.values()):
                break
            assert time.monotonic() < deadline + 120, out.getvalue()[-5000:]
            time.sleep(0.2)
        new_tree[worker.pid] = "the new worker"
        print(
            f"\nold worker's tree: {len(old_tree)} processes, gone {gone_in:.2f} s after "
            f"SIGKILL; a new worker started {restarted_in:.1f} s after it"
        )

        text = out.getvalue()
        assert f"worker (pid {old_pid}) ended on its own: killed by SIGKILL" in text, text
        assert "left behind" not in text  # the supervisor found nothing of it to stop
        assert f"worker restarted (pid {worker.pid})" in text
    finally:
        stop.set()
        if supervising.is_alive():
            supervising.join(10)
        sup.stop_all()
        redis.stop()

    # The replacement, stopped while it loaded, left nothing running either.
    left = alive_after(list(new_tree), timeout=10)
    assert left == [], ({pid: new_tree[pid] for pid in left}, out.getvalue()[-5000:])
