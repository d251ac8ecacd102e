"""Processes spawned the way vLLM starts its engine die with the process that started them.

The parent is the real manage.py (`manage.py shell -c`), so the hook under test is the one the
inference worker runs with; the children are started with multiprocessing's "spawn", as vLLM's
engine processes are, two levels deep like EngineCore and its model-runner process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_worker.lifeline import PARENT_PID_ENV
from tests.processes import pid_alive

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


# --- Run inside the spawned processes (imported there by name) --------------------------------


def engine_like(pid_file: str) -> None:
    """Like vLLM's EngineCore: start a process of its own with spawn, then work forever."""
    context = multiprocessing.get_context("spawn")
    runner = context.Process(target=time.sleep, args=(120,), daemon=True)
    runner.start()
    Path(pid_file).write_text(f"{os.getpid()} {runner.pid}\n")
    time.sleep(120)


def parent_code(pid_file: Path) -> str:
    return textwrap.dedent(f"""\
        import multiprocessing, time
        from tests.worker.test_supervision_lifeline import engine_like
        engine = multiprocessing.get_context("spawn").Process(
            target=engine_like, args=({str(pid_file)!r},))
        engine.start()
        time.sleep(120)
    """)


# --- Helpers ----------------------------------------------------------------------------------


def wait_for_pids(path: Path, parent: subprocess.Popen, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return [int(pid) for pid in path.read_text().split()]
        assert parent.poll() is None, f"the parent ended early ({parent.returncode})"
        time.sleep(0.05)
    raise AssertionError(f"{path} not written within {timeout} s")


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after timeout (none, as soon as all are gone)."""
    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids a test started; whatever is left of them is killed at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )


# --- Tests ------------------------------------------------------------------------------------


def test_spawned_processes_die_when_manage_py_is_killed(tmp_path: Path, spawned) -> None:
    pid_file = tmp_path / "pids"
    parent = start([PY, "manage.py", "shell", "-c", parent_code(pid_file)])
    spawned.append(parent.pid)
    engine, runner = wait_for_pids(pid_file, parent)
    spawned += [engine, runner]
    assert pid_alive(engine) and pid_alive(runner)

    parent.send_signal(signal.SIGKILL)  # no cleanup runs, no one else signals the children
    parent.wait(10)

    # The child gets SIGKILL as its parent exits, then the grandchild as the child exits.
    assert wait_gone([engine, runner], timeout=5) == []


def test_without_the_hook_they_would_be_left_behind(tmp_path: Path, spawned) -> None:
    """The same tree under a parent that is not manage.py: the check above has teeth."""
    pid_file = tmp_path / "pids"
    parent = start([PY, "-c", parent_code(pid_file)])
    spawned.append(parent.pid)
    engine, runner = wait_for_pids(pid_file, parent)
    spawned += [engine, runner]

    parent.send_signal(signal.SIGKILL)
    parent.wait(10)

    assert wait_gone([engine, runner], timeout=1) == [engine, runner]


def test_a_child_orphaned_before_it_could_ask_ends_itself() -> None:
    """The parent died between starting the child and the child's request to the kernel."""
    code = "from inference_worker.lifeline import tie_to_parent; tie_to_parent(); print('alive')"
    env = {**os.environ, "PYTHONPATH": str(ROOT), PARENT_PID_ENV: "1"}  # not its parent

    result = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=30)

    assert result.returncode == -signal.SIGKILL
    assert "alive" not in result.stdout


def test_a_child_of_the_recorded_parent_lives_on() -> None:
    code = (
        "import os; from inference_worker.lifeline import PARENT_PID_ENV, tie_to_parent; "
        "print(tie_to_parent(), os.environ[PARENT_PID_ENV] == str(os.getpid()))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), PARENT_PID_ENV: str(os.getpid())}

    result = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=30)

    assert (result.returncode, result.stdout) == (0, "True True\n")  # and it records itself
