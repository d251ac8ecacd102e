"""Stopping `make run`: any number of stop signals, nested in each other or arriving from make,
is one stop that reaps every child. The stack here is `make run`'s supervisor with cheap
children (a local Redis, a service with a grandchild, a web server) so it can be stopped many
times; tests/e2e/test_faults.py stops the real product the same way once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devstack.stack import PROJECT_ROOT
from devstack.stopping import STOP_SIGNALS, StopRequest, install_stop_handlers
from tests.operations.test_stack import free_port, parent_of_grandchild
from tests.processes import descendants, pid_alive

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

PY = sys.executable
ROUNDS = 20


def test_a_stop_request_wakes_a_wait_at_once_and_stays_set() -> None:
    stop = StopRequest()
    try:
        assert stop.wait(0.01) is False and not stop.is_set()
        stop.set()
        stop.set()  # idempotent
        started = time.monotonic()
        assert stop.wait(30) is True and stop.wait(30) is True
        assert time.monotonic() - started < 1
    finally:
        stop.close()


def test_the_stop_handler_survives_being_run_inside_itself() -> None:
    """A second signal arriving while the handler is still setting the stop runs the handler
    again inside the first call. Forced here: the tracer raises SIGTERM on the second line
    `set` executes, so the handler's second run lands inside the first. A set() that took a
    lock (threading.Event's) would wait here for ever."""
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    lines = 0  # lines of set() reached while tracing
    depths: list[int] = []  # how deep in set() each call of the handler found itself

    def tracer(frame, event, _arg):
        nonlocal lines
        if frame.f_code is not StopRequest.set.__code__:
            return None
        if event == "line":
            lines += 1
            if lines == 2:  # the outer call is past its first line
                signal.raise_signal(signal.SIGTERM)
        return tracer

    stop = install_stop_handlers()
    depth = 0

    def counted_set() -> None:
        nonlocal depth
        depth += 1
        depths.append(depth)
        try:
            StopRequest.set(stop)
        finally:
            depth -= 1

    stop.set = counted_set  # what the handler calls
    try:
        sys.settrace(tracer)
        try:
            signal.raise_signal(signal.SIGINT)
        finally:
            sys.settrace(None)
        assert depths == [1, 2]  # the second signal's handler ran inside the first's set()
        assert stop.is_set() and stop.wait(0) is True
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        stop.close()


def fake_stack(tmp_path: Path) -> tuple[Path, Path, int]:
    """A `make run` whose recipe runs the supervisor on dummy services; (makefile, pid file of
    the service's two processes, web port)."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "healthz").write_text('{"status": "ok"}')
    port = free_port()
    pid_file = tmp_path / "pids"
    web = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(www)]
    script = tmp_path / "fake_stack.py"
    script.write_text(
        textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from devstack.stack import (
            Backoff, Command, Config, Plan, Port, ReadyCheck, Supervisor, install_stop_handlers,
            run_stack,
        )
        stop = install_stop_handlers()
        url = "http://127.0.0.1:{port}"
        plan = Plan(
            steps=[],
            services=[
                Command("worker", {parent_of_grandchild(pid_file)!r}),
                Command("web", {web!r}),
            ],
            ports=[Port("127.0.0.1", {port}, "PORT")],
            ready=[ReadyCheck("web", url + "/healthz")],
            restart=Backoff(),
        )
        config = Config(var_dir=Path({str(tmp_path / "var")!r}))
        sys.exit(run_stack(config, plan, stop, Supervisor(stop_timeout=5)))
    """)
    )
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"run:\n\t{PY} {script}\n")
    return makefile, pid_file, port


def stop_make_run(tmp_path: Path) -> tuple[list[int], str, float]:
    """Start `make run` on the fake stack, wait for its banner, send SIGTERM to its whole
    process group twice in a row; returns every process it ran (make's descendants once all
    were up), its output, and the time it took to exit."""
    makefile, pid_file, _port = fake_stack(tmp_path)
    log = tmp_path / "make.log"
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-f", str(makefile), "run"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # make leads a group, as in a terminal
        )
    tree: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C to stop" not in log.read_text(errors="replace") or not pid_file.exists():
            assert make.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        tree = descendants(make.pid)
        # What a terminal's `kill -TERM -PGID` or a service manager does; make forwards it once
        # more to its recipe, so the supervisor gets it up to four times.
        os.killpg(make.pid, signal.SIGTERM)
        os.killpg(make.pid, signal.SIGTERM)
        sent = time.monotonic()
        make.wait(60)
        took = time.monotonic() - sent
    finally:
        if make.poll() is None:  # hung: clean up before failing, children included
            os.killpg(make.pid, signal.SIGKILL)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            make.wait(10)
    return list(tree), log.read_text(errors="replace"), took


def test_make_run_stopped_by_sigterm_to_its_group_twice_reaps_every_child_every_time(
    tmp_path: Path,
) -> None:
    times = []
    for round_ in range(ROUNDS):
        here = tmp_path / f"round{round_}"
        here.mkdir()
        pids, text, took = stop_make_run(here)
        # The supervisor, Redis, the worker and its grandchild, the web server.
        assert len(pids) == 5, (round_, pids, text)
        assert [pid for pid in pids if pid_alive(pid)] == [], (round_, text)
        assert text.count("stop requested") == 1, (round_, text)
        assert "redis stopped (exit code 0)" in text, (round_, text)
        times.append(took)
    print(f"\n{ROUNDS}/{ROUNDS} stops reaped every child; longest stop {max(times):.1f} s")
