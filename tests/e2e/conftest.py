"""The real stack for end-to-end tests: its own Redis server, the inference worker with the
real vLLM engine and model, and Daphne, as separate processes sharing the test database."""

import asyncio
import contextlib
import functools
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from devstack.localredis import start_redis
from devstack.stack import ReadyCheck, Supervisor, wait_ready
from inference_worker.model_prep import SMOLLM2_135M, embedded_model
from inference_worker.synthetic import SyntheticEngine

ROOT = Path(__file__).resolve().parents[2]


# The stack these tests start serves SmolLM2-135M: they exercise the pipeline, which behaves
# the same whatever the model, and SmolLM2 answers about 2.5 times as fast on a CPU. The
# default model, Qwen2.5-Coder-0.5B, is served and asked by tests/e2e/test_default_model.py.
STACK_MODEL = embedded_model(SMOLLM2_135M)
# How an answer the model wrote may end on a customer channel: the model stopped, an answer
# limit or the loop guard cut it back, or a guard put the help centre's own statements in its
# place (`quoted`). Everything else is a cut-off, a fallback or the product's own answer.
MODEL_ENDINGS = ("stop", "length", "repetition", "quoted")
STACK_MODEL_ENV = {
    "INFERENCE_EMBEDDED_MODEL": STACK_MODEL.key,
    "INFERENCE_MODEL_DIR": str(settings.VAR_DIR / "models" / STACK_MODEL.folder),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(db: dict) -> str:
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user, password = quote(db["USER"], safe=""), quote(db["PASSWORD"], safe="")
    return (
        f"postgres://{user}:{password}@{db['HOST'] or 'localhost'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )


STACK_LOG_ON_FAILURE = 30_000  # characters of the stack's output a failed test's report shows


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran against a stack reports the stack's last output with it: CI keeps
    no other trace of what the worker and Daphne said."""
    report = yield
    if report.failed:
        for name in ("real_stack", "synthetic_stack"):
            stack = getattr(item, "funcargs", {}).get(name)
            output = getattr(stack, "output", None)
            if isinstance(output, io.StringIO):
                report.sections.append(
                    (f"{name} output (last part)", output.getvalue()[-STACK_LOG_ON_FAILURE:])
                )
    return report


ANSWER_TIMEOUT = 120  # s, for a real-model answer on a shared CPU


async def frames_until(ws, kind: str, timeout: float = ANSWER_TIMEOUT) -> list[dict]:
    """The frames a client socket receives up to and including the first of `kind`; a
    timeout fails the test with the frames that did come."""
    got = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await ws.recv())
                got.append(frame)
                if frame["type"] == kind:
                    return got
    except TimeoutError:
        pytest.fail(f"no {kind} within {timeout} s; the frames that came: {got}")


QUIET_DATABASE_WAIT = 10.0  # s, at most, for the servers to finish what a test caused


@pytest.fixture(autouse=True)
def servers_done_with_the_database(request):
    """A test here can end while its servers still write what it caused (a socket closing,
    an answer's last save). Its database is emptied next (TRUNCATE of every table), and on
    PostgreSQL that can deadlock with a server's transaction taking row locks: the test then
    errors in its teardown. So first wait until no other session of the test database is in
    a statement or a transaction (SQLite: its one writer waits its turn anyway)."""
    if request.node.get_closest_marker("django_db") is None:
        yield
        return
    request.getfixturevalue("transactional_db")  # emptied after this fixture's teardown
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + QUIET_DATABASE_WAIT
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)


@dataclass
class Stack:
    http: str
    ws: str
    metrics_url: str
    output: io.StringIO
    redis_url: str = ""  # the stack's own Redis
    worker_pid: int = 0  # the inference worker's process

    @property
    def origin(self) -> str:
        return self.http

    def metrics(self) -> dict[str, float]:
        """The worker's metrics: 'name{label=value,...}' → value, labels sorted, no model label."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(
                    f"{k}={v}"
                    for k, v in sorted(sample.labels.items())
                    if k not in ("model_name", "engine")
                )
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return values


_collected: list[Path] = []


def collected_static(tmp_path_factory) -> Path:
    """A STATIC_ROOT filled by `collectstatic` as a release fills it (hashed and compressed
    copies), once per session: the stacks' Daphnes serve it and their pages link it."""
    if not _collected:
        root = tmp_path_factory.mktemp("static")
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "collectstatic",
                "--noinput",
                "--verbosity",
                "0",
            ],
            env={**os.environ, "STATIC_ROOT": str(root)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        _collected.append(root)
    return _collected[0]


# Every browser and socket of these tests connects from 127.0.0.1: limits per client address
# would count them all as one customer. (tests/answers/test_consumer.py tests those limits.)
SHARED_ADDRESS = {"CHAT_IP_CONVERSATION_LIMIT": "", "CHAT_IP_MESSAGE_LIMIT": ""}

# The tests change bot profiles, sites and actions with queryset updates and empty the database
# between tests, which tells no process: the stacks read them for every answer instead of
# keeping copies (tests/answers/test_configuration.py tests the copies).
FRESH_CONFIGURATION = {"CHAT_CONFIGURATION_MAX_AGE_SECONDS": "0"}


@pytest.fixture(scope="session")
def real_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """Started once for the session (the model takes ~1 min to load on a CPU)."""
    from django.db import connection

    run_dir = tmp_path_factory.mktemp("stack")
    redis = start_redis(run_dir)
    port, metrics_port = free_port(), free_port()
    with django_db_blocker.unblock():
        db_url = database_url(connection.settings_dict)
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "DATABASE_URL": db_url,
        "INFERENCE_METRICS_PORT": str(metrics_port),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        **SHARED_ADDRESS,
        **FRESH_CONFIGURATION,
        "PYTHONUNBUFFERED": "1",
        # The same engine without torch.compile: starts in ~35 s instead of 2-3 min.
        "INFERENCE_ENFORCE_EAGER": "true",
        # Abort tests measure the engine stopping; a reload grace would only delay it.
        "CHAT_REJOIN_GRACE_SECONDS": "0.3",
        **STACK_MODEL_ENV,
        # test_demo_page.py drives the demo page at / (off by default in production).
        "DEMO_PAGE": "true",
        "STATIC_ROOT": str(collected_static(tmp_path_factory)),
    }
    output = io.StringIO()
    sup = Supervisor(out=output, stop_timeout=20)
    manage = [sys.executable, str(ROOT / "manage.py")]
    worker = sup.start("worker", [*manage, "run_inference_worker"], env, cwd=ROOT)
    sup.start(
        "daphne",
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "cs_site.asgi:application",
        ],
        env,
        cwd=ROOT,
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_ready(
            sup,
            [
                ReadyCheck("daphne", f"http://127.0.0.1:{port}/healthz"),
                ReadyCheck("worker", metrics_url, pattern=r"^cs_worker_ready 1"),
            ],
            threading.Event(),
            timeout=600,
        )
    except RuntimeError:
        sup.stop_all()
        redis.stop()
        pytest.fail("the real stack did not start:\n" + output.getvalue()[-5000:])
    yield Stack(
        http=f"http://127.0.0.1:{port}",
        ws=f"ws://127.0.0.1:{port}",
        metrics_url=metrics_url,
        output=output,
        redis_url=redis.url,
        worker_pid=worker.process.pid,
    )
    sup.stop_all()
    redis.stop()


@dataclass
class SyntheticStack:
    http: str
    ws: str
    engine: SyntheticEngine
    daphne_pid: int
    output: io.StringIO  # Daphne's output, for tests that read its log

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.daphne_pid}/status").read_text()
        return int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        )


def _run_worker_in_thread(engine: SyntheticEngine, redis_url: str):
    """An inference worker on its own event loop in a thread of this process."""
    import asyncio

    import redis.asyncio as aioredis
    from channels_redis.core import RedisChannelLayer

    from inference_worker.worker import InferenceWorker

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    async def main() -> None:
        worker = InferenceWorker(
            engine=engine,
            channel_layer=RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": 30}]),
            redis=aioredis.Redis.from_url(redis_url, decode_responses=True),
            channel=settings.INFERENCE["CHANNEL"],
            control_group=settings.INFERENCE["CONTROL_GROUP"],
            max_concurrency=8,
            coalesce_ms=30,
            heartbeat_seconds=1,
            name="synthetic-worker",
        )
        holder["worker"] = worker
        await worker.run(ready=ready.set)

    def run() -> None:
        try:
            loop.run_until_complete(main())
        finally:
            # Closed here, in its own thread: left to the garbage collector, the loop would be
            # closed in whatever test runs then, where channels-redis's flush of its
            # connections cannot run (another loop is running) and is reported as a warning.
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(20):
        raise RuntimeError("the synthetic worker did not start")

    def stop() -> None:
        loop.call_soon_threadsafe(holder["worker"].stop)
        thread.join(10)

    return thread, stop


@contextlib.contextmanager
def synthetic_daphne(
    name: str, engine: SyntheticEngine, tmp_path_factory, django_db_blocker, **env_overrides: str
):
    """Daphne as in production, with its own Redis, answered by a worker (in a thread of this
    process) streaming from the synthetic token source, a test double of the model."""
    from django.db import connection

    redis = start_redis(tmp_path_factory.mktemp(name))
    _, stop_worker = _run_worker_in_thread(engine, redis.url)
    port = free_port()
    with django_db_blocker.unblock():
        db_url = database_url(connection.settings_dict)
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "DATABASE_URL": db_url,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        **SHARED_ADDRESS,
        **FRESH_CONFIGURATION,
        "STATIC_ROOT": str(collected_static(tmp_path_factory)),
        "DEMO_PAGE": "true",  # key-less test sockets, as the demo page's
        **env_overrides,
    }
    output = io.StringIO()
    sup = Supervisor(out=output, stop_timeout=10)
    daphne = sup.start(
        "daphne",
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "cs_site.asgi:application",
        ],
        env,
        cwd=ROOT,
    )
    try:
        wait_ready(
            sup,
            [ReadyCheck("daphne", f"http://127.0.0.1:{port}/healthz")],
            threading.Event(),
            timeout=60,
        )
        yield SyntheticStack(
            http=f"http://127.0.0.1:{port}",
            ws=f"ws://127.0.0.1:{port}",
            engine=engine,
            daphne_pid=daphne.process.pid,
            output=output,
        )
    except RuntimeError:
        pytest.fail(f"the {name} stack did not start:\n" + output.getvalue()[-5000:])
    finally:
        sup.stop_all()
        stop_worker()
        redis.stop()


@pytest.fixture(scope="session")
def synthetic_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """For scripted 'model output' such as XSS payloads; its own Redis keeps it apart from the
    real stack."""
    with synthetic_daphne(
        "synthetic", SyntheticEngine(tokens_per_second=400), tmp_path_factory, django_db_blocker
    ) as stack:
        yield stack


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def host_pages(tmp_path_factory):
    """A company's web server on another origin than the desk: write pages into `.root`,
    open them at `.url`. Serves on 127.0.0.1; the same pages at `.other_url` (localhost, a
    different origin) stand for a site the key does not allow."""
    root = tmp_path_factory.mktemp("host-pages")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    yield types.SimpleNamespace(
        root=root, url=f"http://127.0.0.1:{port}", other_url=f"http://localhost:{port}"
    )
    server.shutdown()


# Without the background-networking flags the closed network floods Chromium with refused
# connections; browsers are never downloaded (`playwright install`): Debian's chromium is used.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What a page shows does not depend on an answer's length; short answers keep browser tests
# quick on a CPU (~20 tokens/s there) while still streaming in many deltas.
MAX_TOKENS = 40


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run `bash scripts/system-deps.sh`")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def short_answers(transactional_db) -> None:
    from chat.models import BotProfile
    from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT

    if not await BotProfile.objects.filter(is_default=True).aupdate(max_tokens=MAX_TOKENS):
        await BotProfile.objects.acreate(
            name=DEFAULT_PROFILE_NAME,
            is_default=True,
            system_prompt=DEFAULT_SYSTEM_PROMPT,
            max_tokens=MAX_TOKENS,
        )
