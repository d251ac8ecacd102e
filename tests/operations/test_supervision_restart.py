"""Crashed services come back: the supervisor's restarts with backoff, driven with dummy
commands, and a whole stack (local Redis, a web server) losing processes and recovering."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from devstack.stack import Backoff, Command, Config, Plan, ReadyCheck, Supervisor, probe, run_stack
from tests.processes import pid_alive

PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(60)"]
QUICK = Backoff(first=0.2, maximum=0.8, reset_after=30)


def output(supervisor: Supervisor) -> str:
    assert isinstance(supervisor.out, io.StringIO)
    return supervisor.out.getvalue()


def eventually(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def crasher(log: Path, *, long_run: int | None = None) -> list[str]:
    """A child that appends its start time (system-wide monotonic clock) to log and exits 3;
    its run number long_run (1-based) lasts 0.7 s instead of a moment."""
    code = textwrap.dedent(f"""\
        import sys, time
        from pathlib import Path
        log = Path({str(log)!r})
        runs = len(log.read_text().splitlines()) + 1 if log.exists() else 1
        with log.open("a") as f:
            f.write(f"{{time.monotonic()}}\\n")
        if runs == {long_run}:
            time.sleep(0.7)
        sys.exit(3)
    """)
    return [PY, "-c", code]


def starts(log: Path) -> list[float]:
    return [float(line) for line in log.read_text().splitlines()] if log.exists() else []


def supervise_until(sup: Supervisor, condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, output(sup)
        assert sup.supervise(timeout=0.05) is None, output(sup)


def delays(sup: Supervisor) -> list[float]:
    return [float(d) for d in re.findall(r"restarting it in ([\d.]+) s", output(sup))]


@pytest.fixture
def sup() -> Iterator[Supervisor]:
    supervisor = Supervisor(stop_timeout=5, out=io.StringIO())
    yield supervisor
    supervisor.stop_all()


# --- Supervisor -------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_maximum() -> None:
    assert [Backoff().delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_crashing_child_is_restarted_with_growing_delays(sup: Supervisor, tmp_path: Path) -> None:
    log = tmp_path / "starts"
    child = sup.start("crasher", crasher(log), restart=QUICK)

    supervise_until(sup, lambda: len(starts(log)) >= 5, timeout=30)

    gaps = [later - earlier for earlier, later in zip(starts(log), starts(log)[1:], strict=False)]
    assert all(gap > delay for gap, delay in zip(gaps[:4], [0.2, 0.4, 0.8, 0.8], strict=True)), gaps
    assert gaps[3] < 0.8 + 1.5  # capped at the maximum (plus a start-up on a busy machine)
    assert delays(sup)[:4] == [0.2, 0.4, 0.8, 0.8]
    text = output(sup)
    assert re.search(
        r"crasher \(pid \d+\) ended on its own: exit code 3 after [\d.]+ s; "
        r"restarting it in 0.2 s\n",
        text,
    ), text
    assert "restarting it in 0.4 s (2 crashes in a row)" in text
    assert re.search(r"crasher restarted \(pid \d+\)", text)
    assert child.restarts >= 4 and sup.children == [child]  # one child, started again


def test_a_run_that_lasted_starts_the_backoff_over(sup: Supervisor, tmp_path: Path) -> None:
    log = tmp_path / "starts"
    backoff = Backoff(first=0.2, maximum=5, reset_after=0.5)
    sup.start("crasher", crasher(log, long_run=3), restart=backoff)

    supervise_until(sup, lambda: len(delays(sup)) >= 4, timeout=30)

    # Runs 1 and 2 crash at once; run 3 stays up 0.7 s (healthy); run 4 crashes at once.
    assert delays(sup)[:4] == [0.2, 0.4, 0.2, 0.4]


def test_stop_during_a_restart_delay_is_prompt(sup: Supervisor, tmp_path: Path) -> None:
    log = tmp_path / "starts"
    sup.start("crasher", crasher(log), restart=Backoff(first=30))
    stop = threading.Event()
    supervising = threading.Thread(target=sup.supervise, args=(stop,))
    supervising.start()
    eventually(lambda: "restarting it in 30 s" in output(sup), 10, "the crash noticed")

    asked = time.monotonic()
    stop.set()
    supervising.join(5)
    sup.stop_all()

    assert time.monotonic() - asked < 1.0
    assert "crasher will not be restarted" in output(sup)
    assert len(starts(log)) == 1 and sup.children == []


def test_what_a_crashed_child_left_running_is_stopped_first(
    sup: Supervisor, tmp_path: Path
) -> None:
    """A leader that dies leaving a process in its group (as vLLM's engine processes would
    without their lifeline): the leftover goes before the next start."""
    pids = tmp_path / "pids"
    code = textwrap.dedent(f"""\
        import os, subprocess, sys
        leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open({str(pids)!r}, "a") as f:
            f.write(f"{{leftover.pid}}\\n")
        os._exit(9)
    """)
    sup.crash_grace = 0.5
    sup.start("leaver", [PY, "-c", code], restart=Backoff(first=0.2))

    supervise_until(sup, lambda: "leaver restarted" in output(sup), timeout=20)

    first_leftover = int(pids.read_text().split()[0])
    assert not pid_alive(first_leftover)
    assert "exit code 9 after" in output(sup)
    assert "stopped the 1 process(es) it left behind" in output(sup)


def test_a_child_without_a_restart_policy_is_handed_back(sup: Supervisor, tmp_path: Path) -> None:
    restarted = sup.start("crasher", crasher(tmp_path / "starts"), restart=QUICK)
    sup.start("quitter", [PY, "-c", "import time; time.sleep(1.5); raise SystemExit(4)"])

    child = sup.supervise(timeout=20)

    assert child is not None and (child.name, child.returncode) == ("quitter", 4)
    assert restarted.restarts >= 1  # restarted meanwhile


# --- A stack whose processes crash ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningStack:
    """run_stack in a thread, as `python -m devstack.stack` runs it in its main thread."""

    def __init__(self, config: Config, plan: Plan) -> None:
        self.sup = Supervisor(stop_timeout=5, out=io.StringIO())
        self.stop = threading.Event()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(config, plan))
        self.thread.start()

    def _run(self, config: Config, plan: Plan) -> None:
        self.code = run_stack(config, plan, self.stop, self.sup)

    @property
    def text(self) -> str:
        return output(self.sup)

    def wait_for(self, line_pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (match := re.search(line_pattern, self.text)) is None:
            assert self.thread.is_alive(), self.text
            assert time.monotonic() < deadline, f"no {line_pattern!r} in:\n{self.text}"
            time.sleep(0.05)
        return match

    def shut_down(self) -> int | None:
        self.stop.set()
        self.thread.join(30)
        return self.code


def test_a_stack_gets_its_crashed_web_server_and_redis_back(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "healthz").write_text("ok")
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    web = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(www)]
    plan = Plan(
        steps=[],
        services=[Command("worker", SLEEPER), Command("web", web)],
        ready=[ReadyCheck("web", url)],
        restart=QUICK,
    )
    stack = RunningStack(Config(var_dir=tmp_path / "var"), plan)
    try:
        stack.wait_for("Ctrl-C to stop")
        redis_pid, redis_url = stack.wait_for(r"started Redis \(pid (\d+)\) at (\S+)").groups()
        client = redis.Redis.from_url(redis_url)
        client.set("before", "crash")
        worker, web = stack.sup.children[1:]  # after Redis, in start order
        web_pid = web.pid

        os.kill(web_pid, signal.SIGKILL)
        stack.wait_for(
            rf"web \(pid {web_pid}\) ended on its own: killed by SIGKILL after "
            r"[\d.]+ s; restarting it in 0.2 s\n"
        )
        stack.wait_for(r"web is ready again, [\d.]+ s after it ended\n")
        assert probe(ReadyCheck("web", url))

        os.kill(int(redis_pid), signal.SIGKILL)
        stack.wait_for(rf"redis \(pid {redis_pid}\) ended on its own: killed by SIGKILL")
        stack.wait_for(r"redis restarted \(pid \d+\)")
        # The same URL answers again, through the client made before the crash; Redis keeps
        # nothing on disk, so the data is gone (the database is the source of truth).
        eventually(lambda: _pings(client), 10, "the restarted Redis answering")
        assert client.get("before") is None

        assert worker.returncode is None and worker.restarts == 0  # the rest kept running
    finally:
        code = stack.shut_down()
    assert code == 0, stack.text
    assert stack.sup.children == []
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", stack.text)]
    assert len(set(pids)) >= 5 and not [pid for pid in pids if pid_alive(pid)]


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def test_a_redis_of_redis_url_is_not_ours_to_restart(tmp_path: Path, redis_server) -> None:
    plan = Plan(steps=[], services=[Command("worker", SLEEPER)], restart=QUICK)
    stack = RunningStack(Config(var_dir=tmp_path, redis_url=redis_server.url), plan)
    try:
        stack.wait_for("Ctrl-C to stop")
        assert [child.name for child in stack.sup.children] == ["worker"]
    finally:
        assert stack.shut_down() == 0
    assert redis.Redis.from_url(redis_server.url).ping()  # left running


def test_a_crash_during_startup_still_stops_the_stack(tmp_path: Path) -> None:
    """Before everything is ready, a crash is nearly always a setting to fix: say so, stop."""
    never_ready = ReadyCheck("web", f"http://127.0.0.1:{free_port()}/")
    plan = Plan(
        steps=[],
        ready=[never_ready],
        restart=QUICK,
        services=[Command("worker", [PY, "-c", "raise SystemExit(5)"])],
    )
    supervisor = Supervisor(out=io.StringIO())

    code = run_stack(Config(var_dir=tmp_path), plan, threading.Event(), supervisor)

    assert code == 1
    assert "worker exited during startup (exit code 5)" in output(supervisor)
    assert "restart" not in output(supervisor)
