"""Scale-out behind Debian's nginx: deploy/nginx.conf in front of two Daphne processes, two
inference workers (`manage.py run_synthetic_worker`, the synthetic token source: the model's
speed does not matter here) and one Redis, every request through nginx.

A customer's socket lands on one Daphne and the agent's console socket on the other (nginx's
X-Upstream header on the 101 response, added to the test's copy of the config, tells which);
the customer's second tab sits on the agent's process. One answer per question, streamed to
every socket on both processes; a takeover mid-answer stops the bot; the agent's reply and
hand-back reach the customer across processes. Static files come from nginx itself."""

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from django.contrib.auth import get_user_model

from chat import limits
from chat.models import BotProfile, Message
from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT
from devstack.localredis import start_redis
from devstack.stack import ReadyCheck, Supervisor, wait_ready
from tests.e2e.conftest import (
    FRESH_CONFIGURATION,
    MODEL_ENDINGS,
    ROOT,
    Stack,
    database_url,
    free_port,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
NGINX_PATHS = ("/usr/sbin/nginx",)  # Debian's; not on a non-root user's PATH
# The synthetic workers stream made-up words at this many characters per second; the bot
# profile's max_tokens (characters, for this source) sets each answer's length.
CHARS_PER_SECOND = 30
SHORT = 60  # ~2 s: an answer that runs to its end
LONG = 1000  # ~33 s: an answer still streaming when the agent takes over
EVENT_TIMEOUT = 60  # s; generous: the machine is shared with other test runs
# The customer connects from another loopback address than nginx's (127.0.0.1), so the
# address Django believes tells which one it took; the forged one must be ignored.
CUSTOMER_ADDRESS, FORGED_ADDRESS = "127.0.0.2", "203.0.113.9"
DONE = "cs_worker_requests_total{outcome=done}"
CANCELLED = "cs_worker_requests_total{outcome=cancelled}"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("Debian's nginx is not installed: run `bash scripts/system-deps.sh`")
    return found


def render_nginx_conf(run_dir: Path, *, listen: int, daphnes: list[int], static_root: Path) -> Path:
    """deploy/nginx.conf with this run's ports and paths: each production value is replaced
    where it stands, so the file under test is the shipped one. Test-only additions: the
    X-Upstream response header (which Daphne served), and temp paths in run_dir."""
    text = NGINX_CONF.read_text()
    temp_paths = "".join(
        f"    {kind}_temp_path {run_dir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    replacements = [
        # Workers as root can read the pytest temp dirs (mode 0700); as another user nginx
        # ignores `user` anyway.
        ("user www-data;", "user root;" if os.geteuid() == 0 else ""),
        ("pid /run/nginx.pid;", f"pid {run_dir / 'nginx.pid'};"),
        ("error_log /var/log/nginx/error.log warn;", f"error_log {run_dir / 'error.log'} warn;"),
        (
            "access_log /var/log/nginx/desk-access.log desk;",
            f"access_log {run_dir / 'access.log'} desk;\n{temp_paths}",
        ),
        ("server 127.0.0.1:8001;", f"server 127.0.0.1:{daphnes[0]};"),
        ("server 127.0.0.1:8002;", f"server 127.0.0.1:{daphnes[1]};"),
        (
            "listen 80;",
            f"listen 127.0.0.1:{listen};\n        add_header X-Upstream $upstream_addr always;",
        ),
        ("alias /srv/desk/staticfiles/;", f"alias {static_root}/;"),
    ]
    for old, new in replacements:
        count = text.count(old)
        assert count == 1, (
            f"deploy/nginx.conf has {count} × {old!r}, where the test expects "
            "exactly one: update render_nginx_conf with the file"
        )
        text = text.replace(old, new)
    path = run_dir / "nginx.conf"
    path.write_text(text)
    return path


@dataclass
class ScaleOut:
    http: str  # nginx
    ws: str
    daphnes: tuple[str, str]  # as nginx's $upstream_addr names them
    redis_url: str
    workers: list[Stack]  # one per worker: `.metrics()` reads its metrics endpoint
    static_root: Path
    output: io.StringIO

    @property
    def origin(self) -> str:
        return self.http

    def worker_total(self, name: str) -> float:
        return sum(worker.metrics().get(name, 0) for worker in self.workers)


@pytest.fixture(scope="module")
def scale_out(django_db_setup, django_db_blocker, tmp_path_factory):
    from django.db import connection

    nginx = nginx_binary()
    run_dir = tmp_path_factory.mktemp("scale-out")
    with django_db_blocker.unblock():
        db_url = database_url(connection.settings_dict)
    static_root = run_dir / "static"
    listen, daphne_ports = free_port(), [free_port(), free_port()]
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        # As docs/operations.md says for nginx in front: its address is trusted for the
        # client's, and it serves /static/ itself.
        "TRUSTED_PROXIES": "127.0.0.1",
        "SERVE_STATIC": "false",
        "STATIC_ROOT": str(static_root),
        "DEMO_PAGE": "true",  # key-less test sockets, as the demo page's
        **FRESH_CONFIGURATION,
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    collected = subprocess.run(
        [*manage, "collectstatic", "--noinput"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr

    redis = start_redis(run_dir)
    env["REDIS_URL"] = redis.url
    output = io.StringIO()
    sup = Supervisor(out=output, stop_timeout=15)
    workers, checks = [], []
    for name in ("w1", "w2"):
        metrics_port = free_port()
        sup.start(
            name,
            [
                *manage,
                "run_synthetic_worker",
                "--name",
                name,
                "--tokens-per-second",
                str(CHARS_PER_SECOND),
                "--words",
                "300",
            ],
            {**env, "INFERENCE_METRICS_PORT": str(metrics_port)},
            cwd=ROOT,
        )
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        workers.append(url)
        checks.append(ReadyCheck(name, url, pattern=r"^cs_worker_ready 1"))
    for index, port in enumerate(daphne_ports, 1):
        sup.start(
            f"daphne{index}",
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
        checks.append(ReadyCheck(f"daphne{index}", f"http://127.0.0.1:{port}/healthz"))
    conf = render_nginx_conf(run_dir, listen=listen, daphnes=daphne_ports, static_root=static_root)
    nginx_argv = [nginx, "-p", f"{run_dir}/", "-c", str(conf), "-e", str(run_dir / "error.log")]
    checked = subprocess.run([*nginx_argv, "-t"], capture_output=True, text=True, timeout=30)
    try:
        assert checked.returncode == 0, f"nginx -t refused the rendered config:\n{checked.stderr}"
        sup.start("nginx", [*nginx_argv, "-g", "daemon off;"], cwd=run_dir)
        # Ready once a request through nginx reaches Django and both workers are alive.
        checks.append(
            ReadyCheck(
                "nginx", f"http://127.0.0.1:{listen}/healthz", pattern=r'"inference_workers": 2\b'
            )
        )
        wait_ready(sup, checks, threading.Event(), timeout=180)
    except (AssertionError, RuntimeError) as exc:
        sup.stop_all()
        redis.stop()
        pytest.fail(f"the scale-out stack did not start: {exc}\n{output.getvalue()[-5000:]}")
    http = f"http://127.0.0.1:{listen}"
    yield ScaleOut(
        http=http,
        ws=f"ws://127.0.0.1:{listen}",
        daphnes=tuple(f"127.0.0.1:{port}" for port in daphne_ports),
        redis_url=redis.url,
        workers=[
            Stack(http=http, ws=f"ws://127.0.0.1:{listen}", metrics_url=url, output=output)
            for url in workers
        ],
        static_root=static_root,
        output=output,
    )
    sup.stop_all()
    redis.stop()


# --- sockets through nginx ------------------------------------------------------------------


class Socket:
    """A WebSocket through nginx whose frames are read as they come, kept in order."""

    def __init__(self, name: str, ws):
        self.name = name
        self.ws = ws
        self.upstream = ws.response.headers.get("X-Upstream", "")
        self.frames: list[dict] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._arrived.set()
        except websockets.ConnectionClosed:
            pass
        self._arrived.set()

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    def mark(self) -> int:
        return len(self.frames)

    async def wait(
        self, predicate: Callable[[dict], bool], since: int = 0, timeout: float = EVENT_TIMEOUT
    ) -> dict:
        """The first frame from index `since` on that satisfies predicate."""
        index = since
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while index < len(self.frames):
                        if predicate(self.frames[index]):
                            return self.frames[index]
                        index += 1
                    if self._reader.done():
                        raise AssertionError("the socket closed")
                    self._arrived.clear()
                    await self._arrived.wait()
        except (TimeoutError, AssertionError) as exc:
            tail = json.dumps(self.frames[since:][-8:], ensure_ascii=False)[:3000]
            pytest.fail(
                f"{self.name} (via {self.upstream}): no such frame "
                f"({type(exc).__name__} {exc}); frames since: {tail}"
            )

    def bot_frames(self) -> list[dict]:
        """bot.start / bot.delta / bot.done frames, unwrapped, in order."""
        return [inner(f) for f in self.frames if inner(f)["type"].startswith("bot.")]

    def text_of(self, message_id: int) -> str:
        return "".join(
            f["text"]
            for f in self.bot_frames()
            if f["type"] == "bot.delta" and f["message_id"] == message_id
        )

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def open_socket(
    name: str,
    url: str,
    *,
    origin: str,
    on: Callable[[str], bool],
    headers: dict | None = None,
    source: str = "127.0.0.1",
) -> Socket:
    """A socket from address `source` that nginx put on a Daphne for which `on(upstream)`
    holds. nginx balances round robin, so the next connection goes to the other process: a
    few tries suffice."""
    seen = []
    for _attempt in range(8):
        ws = await websockets.connect(
            url,
            origin=origin,
            additional_headers=headers or {},
            open_timeout=30,
            local_addr=(source, 0),
        )
        socket = Socket(name, ws)
        if on(socket.upstream):
            return socket
        seen.append(socket.upstream)
        await socket.close()
    pytest.fail(f"{name}: nginx never put it on the wanted Daphne (landed on {seen})")


def is_type(kind: str, **fields) -> Callable[[dict], bool]:
    return lambda f: f["type"] == kind and all(f.get(k) == v for k, v in fields.items())


def inner(frame: dict) -> dict:
    """A bot frame as the customer sees it: a console gets it wrapped in conv.bot."""
    return frame["frame"] if frame["type"] == "conv.bot" else frame


def is_bot(kind: str, **fields) -> Callable[[dict], bool]:
    """A bot frame of a customer's socket or a console's."""
    return lambda f: is_type(kind, **fields)(inner(f))


async def answer_length(characters: int) -> None:
    """The default bot profile's max_tokens: characters of a synthetic answer."""
    if not await BotProfile.objects.filter(is_default=True).aupdate(max_tokens=characters):
        await BotProfile.objects.acreate(
            name=DEFAULT_PROFILE_NAME,
            is_default=True,
            system_prompt=DEFAULT_SYSTEM_PROMPT,
            max_tokens=characters,
        )


async def staff_client(http: str) -> httpx.AsyncClient:
    """An agent logged in through nginx, as the browser does it: the admin login form, with
    the Origin header a browser sends on POSTs (Django's CSRF check compares it with Host)."""
    user = get_user_model()(username="ada", first_name="Ada", is_staff=True)
    user.set_password("a-long-test-password")
    await user.asave()
    client = httpx.AsyncClient(base_url=http, headers={"Origin": http}, timeout=30)
    page = await client.get("/admin/login/", params={"next": "/console/"})
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.text[:500]
    login = await client.post(
        "/admin/login/?next=/console/",
        data={
            "username": "ada",
            "password": "a-long-test-password",
            "csrfmiddlewaretoken": token.group(1),
            "next": "/console/",
        },
    )
    assert login.status_code == 302 and login.headers["location"] == "/console/", login.text[:500]
    return client


async def console_action(agent: httpx.AsyncClient, path: str, **data) -> None:
    """A console POST as htmx sends it (CSRF token in a header)."""
    response = await agent.post(
        path, data=data, headers={"X-CSRFToken": agent.cookies["csrftoken"]}
    )
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:500]}"


async def limited_addresses(redis_url: str) -> set[str]:
    """The client addresses that the per-IP limits (chat/limits.py) have counted: their
    counters in Redis are named after them."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter(f"{limits.KEY_PREFIX}:*")]
    finally:
        await client.aclose()
    return {match.group(1) for key in keys if (match := re.search(r"/ip/([^/]+)/", key))}


async def wait_worker_totals(stack: ScaleOut, done: int, cancelled: int) -> None:
    """Both workers' request counters, once they reach the figures (or the timeout)."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while time.monotonic() < deadline:
        if stack.worker_total(DONE) >= done and stack.worker_total(CANCELLED) >= cancelled:
            break
        await asyncio.sleep(0.2)
    assert (stack.worker_total(DONE), stack.worker_total(CANCELLED)) == (done, cancelled)


# --- the tests ------------------------------------------------------------------------------


async def answered_once(asker, sockets, text: str, client_id: str) -> int:
    """`asker` (the first of `sockets`) asks; the model's answer reaches every socket, each
    exactly as stored. Returns the answer's message id."""
    since = [s.mark() for s in sockets]
    await asker.send({"type": "message", "text": text, "client_id": client_id})
    await asker.wait(is_type("message.ack", client_id=client_id), since[0])
    done = await asker.wait(is_type("bot.done"), since[0])
    answer = done["message_id"]
    for socket, mark in zip(sockets[1:], since[1:], strict=True):
        await socket.wait(is_bot("bot.done", message_id=answer), mark)
    stored = await Message.objects.aget(pk=answer)
    assert done["finish_reason"] in MODEL_ENDINGS and not done["fallback"]
    assert not stored.is_partial and stored.text
    assert [s.text_of(answer) for s in sockets] == [stored.text] * len(sockets)
    return answer


async def test_customer_and_agent_on_two_processes_one_answer_each_takeover_and_hand_back(
    scale_out,
):
    stack = scale_out
    await answer_length(SHORT)
    sockets: list[Socket] = []
    agent = None
    try:
        # The customer's first tab: a new conversation, on one Daphne. Its own
        # X-Forwarded-For is a forgery that nginx appends the real address to.
        tab1 = await open_socket(
            "tab1",
            f"{stack.ws}/ws/chat/?lang=en",
            origin=stack.origin,
            on=lambda upstream: True,
            source=CUSTOMER_ADDRESS,
            headers={"X-Forwarded-For": FORGED_ADDRESS},
        )
        sockets.append(tab1)
        hello = await tab1.wait(is_type("conversation"))
        cid, token = hello["id"], hello["token"]
        assert tab1.upstream in stack.daphnes
        # The new conversation counted against the customer's address, as nginx forwarded
        # it: not nginx's own (TRUSTED_PROXIES), not the forged one.
        assert await limited_addresses(stack.redis_url) == {CUSTOMER_ADDRESS}
        # A conversation reaches the console (and can be watched) with its first message.
        greeting = await answered_once(tab1, [tab1], "What do you sell?", "q0")

        # The agent, logged in through nginx; the console socket on the other Daphne.
        agent = await staff_client(stack.http)
        cookie = "; ".join(f"{name}={value}" for name, value in agent.cookies.items())
        console = await open_socket(
            "console",
            f"{stack.ws}/ws/console/",
            origin=stack.origin,
            on=lambda upstream: upstream != tab1.upstream,
            headers={"Cookie": cookie},
        )
        sockets.append(console)
        assert {tab1.upstream, console.upstream} == set(stack.daphnes)
        await console.send({"type": "watch", "conversation_id": cid})
        await console.send({"type": "ping"})  # frames are handled in order: watching now
        await console.wait(is_type("pong"))

        # The customer's second tab, on the agent's process.
        tab2 = await open_socket(
            "tab2",
            f"{stack.ws}/ws/chat/?conversation={cid}&token={token}",
            origin=stack.origin,
            on=lambda upstream: upstream == console.upstream,
            source=CUSTOMER_ADDRESS,
        )
        sockets.append(tab2)
        resumed = await tab2.wait(is_type("conversation"))
        assert resumed["id"] == cid and resumed["resumed"] is True
        await tab2.wait(is_type("history"))
        customers = (tab1, tab2)

        # 1. A question from the first tab: answered once, streamed to both tabs and to the
        # agent, on both processes, exactly as stored.
        answer1 = await answered_once(tab1, sockets, "Where is my parcel?", "q1")

        # 2. A long answer, asked from the second tab (its process runs it): the agent takes
        # over while it streams, on every screen.
        await answer_length(LONG)
        since = [s.mark() for s in sockets]
        await tab2.send(
            {
                "type": "message",
                "text": "Tell me everything about delivery times.",
                "client_id": "q2",
            }
        )
        await tab2.wait(is_type("message.ack", client_id="q2"), since[2])
        delta = await console.wait(is_bot("bot.delta"), since[1])
        answer2 = inner(delta)["message_id"]
        assert answer2 != answer1
        await tab1.wait(is_bot("bot.delta", message_id=answer2), since[0])
        await console_action(agent, f"/console/c/{cid}/takeover/")
        for socket, mark in zip(customers, (since[0], since[2]), strict=True):
            joined = await socket.wait(is_type("agent.joined"), mark)
            assert joined["agent_name"] == "Ada"
        await console.wait(is_type("conv.status", status="human"), since[1])
        # Read the database once the answer has ended: its bot.done follows the stored row.
        ends = [
            await s.wait(is_bot("bot.done", message_id=answer2), m)
            for s, m in zip(sockets, since, strict=True)
        ]
        assert all(
            inner(end)["finish_reason"] == "takeover" and inner(end)["partial"] for end in ends
        )
        taken = await Message.objects.aget(pk=answer2)
        assert taken.is_partial and taken.finish_reason == "takeover"
        assert 0 < len(taken.text) < LONG  # cut off: the whole answer is LONG characters
        assert [s.text_of(answer2) for s in sockets] == [taken.text] * 3
        # The engine stopped too: its request counts as cancelled at the worker that ran it
        # (the two done so far are the greeting's and the first question's).
        await wait_worker_totals(stack, done=2, cancelled=1)

        # 3. The agent answers; the customer gets it in both tabs (one on the other process),
        # and the agent sees the customer's reply. The bot stays silent.
        since = [s.mark() for s in sockets]
        reply = "Hi, I'm Ada. Your parcel leaves our warehouse today."
        await console_action(agent, f"/console/c/{cid}/reply/", text=reply)
        for socket, mark in zip(customers, (since[0], since[2]), strict=True):
            message = await socket.wait(is_type("agent.message"), mark)
            assert message["text"] == reply and message["agent_name"] == "Ada"
        await tab1.send({"type": "message", "text": "Thank you, Ada!", "client_id": "h1"})
        await tab1.wait(is_type("message.ack", client_id="h1"), since[0])
        said = await console.wait(is_type("conv.message", role="customer"), since[1])
        assert said["text"] == "Thank you, Ada!"

        # 4. Hand back: the next question is answered once, again on every screen.
        await console_action(agent, f"/console/c/{cid}/handback/")
        for socket, mark in zip(customers, (since[0], since[2]), strict=True):
            await socket.wait(is_type("agent.left"), mark)
        await answer_length(SHORT)
        answer3 = await answered_once(tab1, sockets, "When will it arrive?", "q3")

        # One answer per question: in the database, at the workers, and on every socket
        # (one start and one end each, and nothing of the taken-over answer after its end).
        turns = [
            (m.role, m.pk)
            async for m in Message.objects.filter(conversation_id=cid)
            .exclude(role=Message.Role.SYSTEM)
            .order_by("id")
        ]
        assert [role for role, _ in turns] == [
            "customer",
            "bot",
            "customer",
            "bot",
            "customer",
            "bot",
            "agent",
            "customer",
            "customer",
            "bot",
        ]
        assert [pk for role, pk in turns if role == "bot"] == [greeting, answer1, answer2, answer3]
        await wait_worker_totals(stack, done=3, cancelled=1)
        for socket in sockets:
            frames = socket.bot_frames()
            starts = [f["message_id"] for f in frames if f["type"] == "bot.start"]
            ends = [f["message_id"] for f in frames if f["type"] == "bot.done"]
            seen = [greeting] if socket is tab1 else []  # before the others were there
            assert starts == ends == [*seen, answer1, answer2, answer3], socket.name
            end2 = next(
                i
                for i, f in enumerate(frames)
                if f["type"] == "bot.done" and f["message_id"] == answer2
            )
            assert not [
                f
                for f in frames[end2:]
                if f.get("message_id") == answer2 and f["type"] == "bot.delta"
            ], socket.name
    finally:
        for socket in sockets:
            await socket.close()
        if agent is not None:
            await agent.aclose()


def test_nginx_serves_static_files_with_cache_headers(scale_out):
    stack = scale_out
    embed = stack.static_root / "widget" / "embed.js"
    hashed = embed.with_name("embed.0123456789ab.js")  # as ManifestStaticFilesStorage names it
    shutil.copyfile(embed, hashed)
    with httpx.Client(base_url=stack.http, timeout=30) as client:
        plain = client.get("/static/widget/embed.js", headers={"Origin": "https://shop.test"})
        assert plain.status_code == 200 and plain.content == embed.read_bytes()
        assert plain.headers["cache-control"] == "public, max-age=300"
        assert plain.headers["access-control-allow-origin"] == "*"
        assert "x-upstream" not in plain.headers  # from disk, not from a Daphne
        revalidated = client.get(
            "/static/widget/embed.js", headers={"If-None-Match": plain.headers["etag"]}
        )
        assert revalidated.status_code == 304
        versioned = client.get(f"/static/widget/{hashed.name}")
        assert versioned.status_code == 200 and versioned.content == embed.read_bytes()
        assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert client.get("/static/widget/missing.js").status_code == 404
        # Per-process metrics are not served through the balancer; pages are, by a Daphne.
        assert client.get("/metrics").status_code == 404
        health = client.get("/healthz")
        assert health.status_code == 200 and health.headers["x-upstream"] in stack.daphnes
    for daphne in stack.daphnes:  # SERVE_STATIC=false: only nginx has the files
        assert httpx.get(f"http://{daphne}/static/widget/embed.js", timeout=30).status_code == 404
