"""`make run`: start the whole desk on its embedded defaults and keep it running.

    python -m devstack.stack

Why its own supervisor rather than an existing one. What this module does: it runs the one-off
steps first (model preparation with its progress bar, migrations), starts a private Redis when
REDIS_URL is unset, waits for each service's HTTP readiness check, restarts crashed services with
a growing delay, stops Daphne before the worker and Redis, and says what to do next on failure.
- honcho (a Procfile runner) restarts nothing: when one process ends it sends SIGTERM to all the
  others at once and SIGKILL 5 s later, so a crashed worker takes the desk down, and Redis may
  go while Daphne is still saving partial answers. It has no steps and no readiness either.
- supervisord restarts and stops in priority order, but is a daemon with its own config file and
  control tool; it starts in order without waiting for readiness, has no run-to-completion steps,
  gives up (FATAL) after 3 failed starts and restarts a later crash at once, with no backoff.
- circus is the same daemon-plus-config shape (circusd, circusctl, over ZeroMQ); readiness would
  be Python hooks, it respawns at once, and its flapping check stops a watcher after 5 retries.
Any of them would add a dependency and a config to keep in step with the code, for less; the
supervision here is a few hundred lines, tested with dummy commands. In production, run the
same commands under the platform's own manager (systemd, Kubernetes, ...).

Order: Redis (REDIS_URL if set, else a private local server), `prepare_model`, `migrate`,
`import_knowledge --sample` (the sample help centre), `collectstatic` (Daphne serves the
collected files), then the inference worker and Daphne.
Once everything is ready, a service that ends on its own is started again, with a one-line
notice, after a delay that doubles from 1 s up to 30 s while it keeps failing (a run of 60 s
counts as healthy again): a crashed worker comes back while Daphne goes on serving (customers
get the fallback answers meanwhile), and a crashed local Redis comes back on the same socket,
where the other processes reconnect. A Redis given by REDIS_URL is not ours to restart. What
is left of a crashed process's group is stopped before it starts again. During startup any
failure stops everything with the error, since it is nearly always a setting to fix. Ctrl-C
or SIGTERM stops Daphne, then the worker, then Redis, and exits 0; any number of them is one
stop (a SIGTERM to the process group of `make run` arrives twice: see devstack/stopping.py).

Environment: HOST (127.0.0.1), PORT (8000), INFERENCE_METRICS_HOST (127.0.0.1) and
INFERENCE_METRICS_PORT (9101; 0 turns the worker's endpoint off, so its readiness goes unchecked),
REDIS_URL (unset: start one), VAR_DIR (<project>/var), STACK_READY_TIMEOUT (1200 s: model load),
DEMO_PAGE (true here, unlike the settings' default: the demo chat page at /). The URL of a
Redis started here is kept in VAR_DIR/run/redis.url while it runs, for `manage.py` commands
from other shells (runtime/stack_redis.py).

The supervision part (`Supervisor`, `run_stack`) knows nothing about this product: the product's
commands come from `product_plan`, so tests drive the same code with dummy commands.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

from devstack.localredis import check_redis, start_redis
from devstack.stopping import Stop, install_stop_handlers
from inference_worker.model_prep import (
    DEFAULT_EMBEDDED_MODEL,
    QWEN_CODER_05B,
    SMOLLM2_135M,
    ModelPrepError,
    embedded_model,
)
from runtime import stack_redis

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 15.0
KILL_TIMEOUT = 5.0
# How long what a crashed process started may take to end by itself before it gets a signal
# (vLLM's engine processes end with the worker, but a few GB take a moment to tear down).
CRASH_GRACE = 3.0
POLL_INTERVAL = 0.1
# prometheus_client renders the gauge as "cs_worker_ready 1.0"; labels are allowed.
WORKER_READY_PATTERN = r"^cs_worker_ready(\{[^}]*\})? 1(\.0*)?$"


# --- Supervision: generic, tested with dummy commands ---------------------------------------


def describe_exit(returncode: int | None) -> str:
    """'exit code 3' or 'killed by SIGKILL' (Popen reports death by signal N as -N)."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def live_group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group pgid.

    Zombies don't count: orphaned grandchildren are reparented to PID 1, and in some containers
    PID 1 never reaps them, so `killpg(pgid, 0)` alone would report a dead group as alive.
    """
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the signal probe is the best there is
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # After the ")" closing the command name come: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def duration(seconds: float) -> str:
    """'0.4 s', '42 s', '3 min 5 s': how long a process ran, for a log line."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


@dataclass(frozen=True)
class Backoff:
    """When to start a crashed process again: after `first` seconds, doubling with each crash
    in a row up to `maximum`. A run of `reset_after` seconds or more counts as healthy, so the
    next crash waits `first` again. A process that cannot start is retried for ever, at most
    every `maximum` seconds: it may be waiting for something (a GPU, a database) to come back."""

    first: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def delay(self, crashes: int) -> float:
        """The wait before restart number `crashes` of a row of crashes (1, 2, ...)."""
        return min(self.first * 2 ** max(crashes - 1, 0), self.maximum)


Launch = Callable[[], "subprocess.Popen[bytes]"]


@dataclass
class Child:
    """One supervised process; it leads its own process group (pgid == pid).

    With a restart policy, a crashed child is started again by `launch` and keeps this object
    (and its place in the stop order); `process` is then the new process.
    """

    name: str
    process: subprocess.Popen[bytes]
    launch: Launch | None = field(default=None, repr=False)
    restart: Backoff | None = None
    prefix: bool = False  # its output goes through a relay thread
    relay: threading.Thread | None = field(default=None, repr=False)
    started_at: float = field(default_factory=time.monotonic)
    crashes: int = 0  # in a row, see Backoff
    restarts: int = 0  # in all
    ended_at: float | None = None  # when its last crash was noticed
    restart_at: float | None = None  # set while it waits to be started again

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()


class Supervisor:
    """Starts children in their own process groups, restarts the ones with a restart policy
    when they crash, and stops whole groups in reverse order."""

    def __init__(
        self,
        *,
        stop_timeout: float = STOP_TIMEOUT,
        crash_grace: float = CRASH_GRACE,
        out: TextIO | None = None,
    ) -> None:
        self.stop_timeout = stop_timeout
        self.crash_grace = crash_grace
        self.children: list[Child] = []
        self.out = out if out is not None else sys.stdout
        # Relay threads and the supervisor write whole lines under one lock so none interleave.
        self._lock = threading.Lock()

    def say(self, message: str) -> None:
        self.write(f"[stack] {message}\n")

    def write(self, text: str) -> None:
        with self._lock:
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError):  # our terminal is gone; keep draining the children
                pass

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        prefix: bool = True,
        restart: Backoff | None = None,
    ) -> Child:
        """Start argv as a new session; with prefix, its output lines are shown as 'name | ...'.

        A new session (hence a new process group) keeps the child out of the terminal's
        foreground group: Ctrl-C reaches only the supervisor, which then stops the children in
        order, and a stop signal to the group also reaches any processes the child spawned.
        With restart, `supervise` starts it again the same way when it crashes.
        """
        argv, env = list(argv), dict(env) if env is not None else None

        def launch() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if prefix else None,
                stderr=subprocess.STDOUT if prefix else None,
                start_new_session=True,
            )

        child = Child(name, launch(), launch, restart, prefix)
        self._relay_output(child)
        self.children.append(child)
        return child

    def adopt(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        *,
        launch: Launch,
        restart: Backoff | None,
    ) -> Child:
        """Supervise a process started elsewhere (in a session of its own), to be started
        again by launch (e.g. a local Redis, which must come back on the same socket)."""
        child = Child(name, process, launch, restart)
        self.children.append(child)
        return child

    def _relay_output(self, child: Child) -> None:
        if child.prefix:
            assert child.process.stdout is not None
            child.relay = threading.Thread(
                target=self._relay, args=(child.name, child.process.stdout), daemon=True
            )
            child.relay.start()

    def _relay(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                text = raw.decode(errors="replace").rstrip("\r\n")
                # Progress bars redraw with "\r": show only the final state of the line.
                self.write(f"{name:<7}| {text.rsplit(chr(13), 1)[-1]}\n")

    def drain(self, child: Child, timeout: float = 1.0) -> None:
        """Let the relay print a finished child's last lines (e.g. its traceback) first."""
        if child.relay is not None:
            child.relay.join(timeout)

    def exited(self) -> Child | None:
        """The first child that has exited and is not waiting to be restarted, if any."""
        for child in self.children:
            if child.restart_at is None and child.returncode is not None:
                return child
        return None

    def supervise(self, stop: Stop | None = None, timeout: float | None = None) -> Child | None:
        """Keep the children running: restart those with a restart policy when they crash.

        Returns a child that exited and is not to be restarted, or None when stop is set or
        timeout passes. A stop during a restart delay is noticed within POLL_INTERVAL.
        """
        stop = stop or threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            child = self.tend()
            if child is not None:
                return child
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if stop.wait(POLL_INTERVAL):
                return None

    def tend(self) -> Child | None:
        """One round of `supervise`: note crashes, start again the children that are due."""
        for child in list(self.children):
            if child.restart_at is not None:
                if time.monotonic() >= child.restart_at:
                    self._restart(child)
            elif child.returncode is not None:
                if child.restart is None:
                    self.drain(child)
                    return child
                self._crashed(child)
        return None

    def _crashed(self, child: Child) -> None:
        assert child.restart is not None
        now = time.monotonic()
        uptime = now - child.started_at
        # Whatever the crashed process started (e.g. vLLM's engine processes) must not outlive
        # it: it would hold the memory, ports and GPU the new process needs.
        leftovers = 0
        if not self._wait_group(child, self.crash_grace):
            leftovers = len(live_group_members(child.pid))
            self._end_group(child)
        self.drain(child)
        if uptime >= child.restart.reset_after:
            child.crashes = 0
        child.crashes += 1
        delay = child.restart.delay(child.crashes)
        child.ended_at, child.restart_at = now, now + delay
        self.say(
            f"{child.name} (pid {child.pid}) ended on its own: {describe_exit(child.returncode)}"
            f" after {duration(uptime)}"
            + (f", stopped the {leftovers} process(es) it left behind" if leftovers else "")
            + f"; restarting it in {delay:g} s"
            + (f" ({child.crashes} crashes in a row)" if child.crashes > 1 else "")
        )

    def _restart(self, child: Child) -> None:
        assert child.launch is not None and child.restart is not None
        child.restart_at = None
        child.started_at = time.monotonic()
        try:
            child.process = child.launch()
        except (OSError, RuntimeError) as exc:  # e.g. its program is gone: try again later
            child.crashes += 1
            delay = child.restart.delay(child.crashes)
            child.restart_at = time.monotonic() + delay
            self.say(f"{child.name} could not be started ({exc}); next try in {delay:g} s")
            return
        child.restarts += 1
        self._relay_output(child)
        self.say(f"{child.name} restarted (pid {child.pid})")

    def run(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        stop: Stop | None = None,
        cwd: Path | None = None,
    ) -> int | None:
        """Run a one-off command to completion with the terminal as its output (progress bars
        draw as usual). Returns its exit code, or None when stop was set (it is then stopped)."""
        child = self.start(name, argv, env, cwd=cwd, prefix=False)
        stop = stop or threading.Event()
        while child.returncode is None:
            if stop.wait(POLL_INTERVAL):
                self.stop(child)
                return None
        self.stop(child, quiet=True)  # reaps anything it left behind in its group
        return child.returncode

    def stop(self, child: Child, *, quiet: bool = False) -> None:
        """Stop the child and everything in its group, then forget the child.

        SIGTERM goes to the leader first: a program that runs children of its own (the
        inference worker's vLLM engine processes) shuts them down in order, which a signal
        to all of them at once would race. What is left of the group when the leader is gone
        (or after stop_timeout) gets SIGTERM, then SIGKILL.
        """
        if child.restart_at is not None:  # crashed, its group already ended: just don't restart
            self.children.remove(child)
            if not quiet:
                self.say(f"{child.name} will not be restarted")
            return
        if child.returncode is None or live_group_members(child.pid):
            if not quiet:
                self.say(f"stopping {child.name} (pid {child.pid})")
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
                self._wait_leader(child, self.stop_timeout)
            self._end_group(child)
        self.drain(child)
        self.children.remove(child)
        if not quiet:
            self.say(f"{child.name} stopped ({describe_exit(child.returncode)})")

    def _end_group(self, child: Child) -> None:
        """SIGTERM to the child's whole group, SIGKILL to what is left after KILL_TIMEOUT."""
        _signal_group(child.pid, signal.SIGTERM)
        if not self._wait_group(child, KILL_TIMEOUT):
            self.say(f"{child.name} did not stop on SIGTERM: killing it")
            _signal_group(child.pid, signal.SIGKILL)
            self._wait_group(child, KILL_TIMEOUT)

    def _wait_leader(self, child: Child, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while child.returncode is None and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)

    def _wait_group(self, child: Child, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            # Reap the leader first: until reaped it is a zombie still listed in its group.
            if child.returncode is not None and not live_group_members(child.pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL)

    def stop_all(self) -> None:
        """Stop every child, the last started first. Idempotent."""
        for child in reversed(list(self.children)):
            self.stop(child)


# --- The plan a stack runs, and running it ---------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    argv: Sequence[str]


@dataclass(frozen=True)
class Port:
    """A port a service will listen on, and the variable that changes it."""

    host: str
    port: int
    env_var: str


@dataclass(frozen=True)
class ReadyCheck:
    """Ready when GET url answers 200 and (if given) the body matches pattern (multiline).

    A check named like a service also tells when that service is back after a restart.
    """

    name: str
    url: str
    pattern: str | None = None
    hint: str = ""


@dataclass(frozen=True)
class Plan:
    steps: Sequence[Command]  # one-off commands, run to completion in order
    services: Sequence[Command]  # long-running, stopped in reverse order
    ports: Sequence[Port] = ()
    ready: Sequence[ReadyCheck] = ()
    links: Sequence[tuple[str, str]] = ()  # (label, URL) for the banner
    # How services (and a local Redis) that crash once all is ready are started again; with
    # None, the first process to end stops the whole stack.
    restart: Backoff | None = None


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9101
    redis_url: str | None = None
    var_dir: Path = PROJECT_ROOT / "var"
    ready_timeout: float = 1200.0
    # The demo chat page at / (settings.DEMO_PAGE, off by default): on for a local try-out.
    demo_page: bool = True
    # The model the worker loads (INFERENCE_MODEL), else the embedded one it names: the
    # load-time hint follows it.
    model: str = ""
    embedded_model: str = DEFAULT_EMBEDDED_MODEL

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        def flag(name: str, default: bool) -> bool:
            value = environ.get(name, "").strip().lower()
            return value in TRUE_WORDS if value else default

        def number(name: str, default: float) -> float:
            value = environ.get(name, "").strip()
            try:
                return float(value) if value else default
            except ValueError:
                raise ValueError(f"{name} must be a number, got {value!r}") from None

        return cls(
            host=environ.get("HOST") or cls.host,
            port=int(number("PORT", cls.port)),
            metrics_host=environ.get("INFERENCE_METRICS_HOST") or cls.metrics_host,
            metrics_port=int(number("INFERENCE_METRICS_PORT", cls.metrics_port)),
            redis_url=environ.get("REDIS_URL") or None,
            var_dir=Path(environ.get("VAR_DIR") or cls.var_dir),
            ready_timeout=number("STACK_READY_TIMEOUT", cls.ready_timeout),
            demo_page=flag("DEMO_PAGE", cls.demo_page),
            model=environ.get("INFERENCE_MODEL", "").strip(),
            embedded_model=environ.get("INFERENCE_EMBEDDED_MODEL", "").strip()
            or cls.embedded_model,
        )


# What django-environ (the settings) reads as true; any other value is false.
TRUE_WORDS = frozenset({"true", "on", "ok", "y", "yes", "1"})


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived: stop everything and exit 0."""


def url_host(host: str) -> str:
    """The host to put in a URL for a server bound to host (wildcards mean this machine)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port, or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so connections in TIME_WAIT don't make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def check_ports(ports: Sequence[Port]) -> None:
    problems = []
    for p in ports:
        why = port_problem(p.host, p.port)
        if why:
            problems.append(
                f"cannot listen on {p.host}:{p.port} ({why}); another program (another "
                f"`make run`?) may use it. Stop it, or pick another port: "
                f"{p.env_var}={p.port + 1} make run"
            )
    if problems:
        raise RuntimeError("\n".join(problems))


# Loopback probes must not go through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe(check: ReadyCheck, timeout: float = 2.0) -> bool:
    try:
        with _opener.open(check.url, timeout=timeout) as response:
            if response.status != 200:
                return False
            body = response.read().decode(errors="replace")
    except (OSError, ValueError, http.client.HTTPException):  # refused, reset, HTTP error...
        return False
    return check.pattern is None or re.search(check.pattern, body, re.MULTILINE) is not None


def wait_ready(
    sup: Supervisor,
    checks: Sequence[ReadyCheck],
    stop: Stop,
    timeout: float,
    report_every: float = 5.0,
) -> None:
    """Block until every check passes; raise on a child exiting, on timeout, or on stop."""
    started = time.monotonic()
    next_report = started + report_every
    pending = list(checks)
    while True:
        pending = [check for check in pending if not probe(check)]
        if not pending:
            return
        child = sup.exited()
        if child is not None:
            sup.drain(child)
            raise RuntimeError(
                f"{child.name} exited during startup ({describe_exit(child.returncode)}); "
                "see its output above."
            )
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            names = ", ".join(check.name for check in pending)
            raise RuntimeError(
                f"{names} not ready after {timeout:g} s; see the output above, or set "
                "STACK_READY_TIMEOUT to wait longer."
            )
        if time.monotonic() >= next_report:
            waiting = ", ".join(f"{c.name} ({c.hint})" if c.hint else c.name for c in pending)
            sup.say(f"waiting for {waiting} ... {elapsed:.0f} s")
            next_report += report_every
        if stop.wait(0.5):
            raise Stopped


def banner(links: Sequence[tuple[str, str]]) -> str:
    width = max((len(label) for label, _ in links), default=0) + 2
    rows = [f"  {label + ':':<{width}}{url}" for label, url in links]
    rule = "=" * 64
    return "\n".join([rule, "  The desk is running.", *rows, "  Ctrl-C to stop.", rule, ""])


def shown(argv: Sequence[str]) -> str:
    """argv for a message, without our own interpreter's long path."""
    return shlex.join(argv[1:] if argv and argv[0] == sys.executable else argv)


def child_env(environ: Mapping[str, str], config: Config, redis_url: str) -> dict[str, str]:
    env = dict(environ)
    env["REDIS_URL"] = redis_url
    env["VAR_DIR"] = str(config.var_dir)
    env["DEMO_PAGE"] = "true" if config.demo_page else "false"
    # The sample actions call the sample shop this desk serves, on the port it serves on.
    env.setdefault("ACTIONS_SAMPLE_BASE_URL", f"http://{config.host}:{config.port}")
    env.setdefault("DJANGO_SETTINGS_MODULE", "cs_site.settings")
    # Pipes make Python block-buffer its output; children's lines should show as they happen.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_stack(config: Config, plan: Plan, stop: Stop, sup: Supervisor) -> int:
    """Run plan until stop is set (exit code 0) or something fails (non-zero)."""
    redis_server = None
    try:
        check_ports(plan.ports)
        if config.redis_url:
            check_redis(config.redis_url)
            redis_url = config.redis_url
        else:
            redis_server = start_redis(config.var_dir / "run")
            redis_url = redis_server.url
            sup.say(f"started Redis (pid {redis_server.pid}) at {redis_url}")
            # Children get the URL in their environment; a `manage.py` command typed in
            # another shell finds it in VAR_DIR/run (runtime/stack_redis.py), so what it
            # changes reaches this desk at once.
            stack_redis.record(config.var_dir, redis_url)
            # First in, so last out: the others stop while it still answers.
            sup.adopt(
                "redis", redis_server.process, launch=redis_server.launch, restart=plan.restart
            )
        env = child_env(os.environ, config, redis_url)
        for step in plan.steps:
            if stop.is_set():
                raise Stopped
            sup.say(f"running {step.name}: {shown(step.argv)}")
            code = sup.run(step.name, step.argv, env, stop=stop, cwd=PROJECT_ROOT)
            if code is None:
                raise Stopped
            if code != 0:
                raise RuntimeError(
                    f"{step.name} failed ({describe_exit(code)}); fix the error shown above "
                    "and run `make run` again."
                )
        check_ports(plan.ports)  # again: a first model preparation can take minutes
        for service in plan.services:
            sup.start(service.name, service.argv, env, cwd=PROJECT_ROOT, restart=plan.restart)
        wait_ready(sup, plan.ready, stop, config.ready_timeout)
        # Only a local Redis is shown: a REDIS_URL may carry a password.
        local_redis = [("Redis", redis_url)] if redis_server else []
        sup.write(banner([*plan.links, *local_redis]))
        child = keep_running(sup, plan.ready, stop)
        if child is not None:
            sup.say(
                f"{child.name} exited on its own ({describe_exit(child.returncode)}); "
                "stopping the rest."
            )
            return 1
        raise Stopped
    except Stopped:
        sup.say(f"stop requested: shutting down (up to {sup.stop_timeout:g} s per process)")
        return 0
    except RuntimeError as exc:
        sup.say(f"error: {exc}")
        return 1
    finally:
        if redis_server is not None:
            # First: a command started during shutdown must not pick a Redis about to go.
            stack_redis.forget(config.var_dir, redis_server.url)
        sup.stop_all()
        if redis_server is not None:
            redis_server.stop()  # stopped above; this removes its socket file (and short dir)


def keep_running(
    sup: Supervisor,
    checks: Sequence[ReadyCheck],
    stop: Stop,
    probe_every: float = 1.0,
) -> Child | None:
    """Supervise until stop is set (None) or a child that is not restarted ends (returned).

    A restarted service with a check of its name is probed until it passes, then one line says
    how long after its crash it was ready again (for the worker: the model is loaded again).
    """
    checks_by_name = {check.name: check for check in checks}
    restarts_seen = {child.name: child.restarts for child in sup.children}
    down_since: dict[str, float] = {}  # service name → when it crashed (the first of a row)
    while True:
        child = sup.supervise(stop, timeout=probe_every)
        if child is not None:
            return child
        if stop.is_set():
            return None
        for child in sup.children:
            if child.restarts != restarts_seen.get(child.name, 0):
                restarts_seen[child.name] = child.restarts
                if child.name in checks_by_name and child.ended_at is not None:
                    down_since.setdefault(child.name, child.ended_at)
        for child in sup.children:
            since = down_since.get(child.name)
            if since is None or child.returncode is not None:
                continue
            if probe(checks_by_name[child.name]):
                del down_since[child.name]
                sup.say(
                    f"{child.name} is ready again, {duration(time.monotonic() - since)} "
                    "after it ended"
                )


# Until the worker is ready on a 2-core CPU, with torch.compile (the default) and without it
# (INFERENCE_ENFORCE_EAGER=true). SmolLM2: 152-191 s and 34 s. Qwen: 258 s compiled (the
# worker from its start to ready, the machine otherwise idle), 29-37 s eager.
MODEL_LOAD_TIMES = {
    QWEN_CODER_05B: ("4-5 min", "~40 s"),
    SMOLLM2_135M: ("2-3 min", "~35 s"),
}


def model_load_hint(config: Config) -> str:
    """What the worker is busy with while it is not ready yet, and how long that takes."""
    if config.model:
        return f"loading {config.model}"
    try:
        spec = embedded_model(config.embedded_model)
    except ModelPrepError:
        return "loading the model"  # the `model` step has already said what is wrong
    compiled, eager = MODEL_LOAD_TIMES.get(spec.key, ("a few minutes", "less"))
    return (
        f"loading {spec.folder}: {compiled} on a 2-core CPU; INFERENCE_ENFORCE_EAGER=true, {eager}"
    )


def product_plan(config: Config) -> Plan:
    """The desk's own commands: model, database, inference worker, Daphne."""
    python = sys.executable
    manage = [python, "manage.py"]
    web = f"http://{url_host(config.host)}:{config.port}"
    worker_metrics = f"http://{url_host(config.metrics_host)}:{config.metrics_port}/metrics"
    daphne = [
        python,
        "-m",
        "daphne",
        "-b",
        config.host,
        "-p",
        str(config.port),
        "cs_site.asgi:application",
    ]
    ports = [Port(config.host, config.port, "PORT")]
    ready = [ReadyCheck("web", f"{web}/healthz")]
    links = [("Chat demo", f"{web}/")] if config.demo_page else []
    links += [
        ("Agent console", f"{web}/console/"),
        ("Admin", f"{web}/admin/"),
        ("Metrics", f"{web}/metrics"),
    ]
    if config.metrics_port:  # 0 turns the worker's endpoint off, and with it this check
        ports.append(Port(config.metrics_host, config.metrics_port, "INFERENCE_METRICS_PORT"))
        ready.append(
            ReadyCheck("worker", worker_metrics, WORKER_READY_PATTERN, hint=model_load_hint(config))
        )
        links.append(("Worker metrics", worker_metrics))
    return Plan(
        steps=[
            Command("model", [*manage, "prepare_model"]),
            Command("migrate", [*manage, "migrate", "--noinput"]),
            # The sample help centre (marked as sample data; `import_knowledge --remove-sample`
            # removes it), so the demo answers real questions: a no-op once loaded.
            Command("knowledge", [*manage, "import_knowledge", "--sample"]),
            # The sample actions on the sample shop's order API this desk serves (marked as
            # sample data; `import_actions --remove-sample` removes them).
            Command("actions", [*manage, "import_actions", "--sample"]),
            # Hashed, compressed copies into STATIC_ROOT; unchanged files are skipped.
            Command("static", [*manage, "collectstatic", "--noinput"]),
        ],
        services=[
            Command("worker", [*manage, "run_inference_worker"]),
            # The webhook outbox's sender: restarted like the others; the rows wait in the
            # database while it is down.
            Command("webhooks", [*manage, "run_webhooks"]),
            # The channels' mailboxes and outbox (e-mail): with no inbox it waits for one.
            Command("connectors", [*manage, "run_connectors"]),
            Command("web", daphne),  # started last, so stopped first: no new requests
        ],
        ports=ports,
        ready=ready,
        links=links,
        restart=Backoff(),
    )


def main(argv: Sequence[str] = ()) -> int:
    if argv:  # no options: everything comes from the environment
        if argv[0] in ("-h", "--help"):
            print(__doc__)
            return 0
        print(
            f"unknown argument {argv[0]!r}: settings come from the environment (see --help)",
            file=sys.stderr,
        )
        return 2
    # First: a stop that arrives while the rest starts up is noticed like any other.
    stop = install_stop_handlers()
    import environ  # django-environ: the same optional .env file the settings read

    environ.Env.read_env(PROJECT_ROOT / ".env", overwrite=False)
    sup = Supervisor()
    try:
        config = Config.from_env(os.environ)
    except ValueError as exc:
        sup.say(f"error: {exc}")
        return 2
    return run_stack(config, product_plan(config), stop, sup)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
