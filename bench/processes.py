"""The processes a benchmark runs against: Redis, a throwaway database, Daphne, workers, and
vLLM's own server, started with the product's own supervision code (devstack.stack).

Their output goes to log files under var/bench/, so the progress bars stay readable; when one
fails to start, the error names its log and the last lines of it.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from devstack.localredis import RedisServer, start_redis
from devstack.stack import Child, ReadyCheck, Supervisor, wait_ready

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "bench"
ORIGIN = "http://127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_open_files_limit() -> int:
    """Thousands of sockets need thousands of descriptors; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Bench:
    """One benchmark run's Redis, database and supervised processes."""

    run_dir: Path
    redis: RedisServer
    env: dict[str, str]
    log_path: Path
    sup: Supervisor
    children: dict[str, Child] = field(default_factory=dict)

    def start(
        self,
        name: str,
        argv: list[str],
        checks: list[ReadyCheck],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> psutil.Process:
        """Start a supervised process and wait until its checks pass."""
        child = self.sup.start(name, argv, {**self.env, **(env or {})}, cwd=ROOT)
        self.children[name] = child
        try:
            wait_ready(self.sup, checks, threading.Event(), timeout=timeout)
        except RuntimeError as exc:
            raise RuntimeError(
                f"{name} did not start: {exc}\nLast lines of {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            ) from None
        return psutil.Process(child.pid)

    def stop(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            self.sup.stop(child)

    def daphne(
        self, port: int, *, name: str = "daphne", env: dict[str, str] | None = None
    ) -> psutil.Process:
        argv = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "cs_site.asgi:application",
        ]
        return self.start(
            name, argv, [ReadyCheck(name, f"http://127.0.0.1:{port}/healthz")], env=env
        )

    def manage(self, *args: str) -> None:
        """A one-off manage.py command (migrate, prepare_model), its output in the log."""
        with self.log_path.open("a") as log:
            log.write(f"[bench] manage.py {' '.join(args)}\n")
            log.flush()
            code = subprocess.call(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if code != 0:
            raise RuntimeError(
                f"manage.py {' '.join(args)} failed (exit code {code}); last "
                f"lines of {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis.url)
        try:
            client.flushall()
        finally:
            client.close()


@contextmanager
def bench_environment(name: str):
    """A private Redis, a migrated throwaway SQLite database and a supervisor, removed after.

    The per-IP limits are switched off: every simulated customer comes from 127.0.0.1."""
    raise_open_files_limit()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{name}.log"
    log_path.write_text("")
    run_dir = Path(tempfile.mkdtemp(prefix="cs-bench-", dir="/tmp"))
    redis = start_redis(run_dir)
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "DATABASE_URL": f"sqlite:///{run_dir / 'bench.sqlite3'}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        "DEMO_PAGE": "true",  # the simulated customers connect without a site key
        "CHAT_IP_CONVERSATION_LIMIT": "",
        "CHAT_IP_MESSAGE_LIMIT": "",
        "CHAT_SITE_CONVERSATION_LIMIT": "",
        "CHAT_SITE_CONCURRENT_ANSWERS": "0",
    }
    log = log_path.open("a")
    bench = Bench(run_dir, redis, env, log_path, Supervisor(out=log, stop_timeout=20))
    try:
        bench.manage("migrate", "--noinput")
        yield bench
    finally:
        bench.sup.stop_all()
        redis.stop()
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def use_bench_database(bench: Bench) -> None:
    """Point this process's Django at the bench database (for the bot profile and the system
    prompt); once per run: both parts share the environment."""
    os.environ["DATABASE_URL"] = bench.env["DATABASE_URL"]
    os.environ["REDIS_URL"] = bench.env["REDIS_URL"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_site.settings")
    import django

    django.setup()


def set_bot_profile(**fields) -> None:
    """The default bot profile every benchmark conversation answers with."""
    from chat.models import BotProfile
    from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT

    BotProfile.objects.update_or_create(
        is_default=True,
        defaults={"name": DEFAULT_PROFILE_NAME, "system_prompt": DEFAULT_SYSTEM_PROMPT, **fields},
    )
