"""Shared by the action tests: a valid action to vary, and a real HTTP back end to call."""

import asyncio
import http.server
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from chat.actions.models import Action
from tests.customers.helpers import SHOP, sign

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "pattern": "^A[0-9]{4}$"}},
    "required": ["order_id"],
}


def make_action(**fields) -> Action:
    """An unsaved action that passes every check; `fields` change some of it."""
    values = {
        "name": "order_status",
        "description": "Look up one of the customer's orders by its number.",
        "method": Action.Method.GET,
        "url": "https://shop.example.com/api/orders/{order_id}?customer={customer.id}",
        "parameters": ORDER_SCHEMA,
        "headers": {},
        "audience": Action.Audience.VERIFIED,
        "result": "Order {order_id}: {status}",
        "timeout_seconds": 2.0,
    }
    values.update(fields)
    return Action(**values)


@dataclass
class Seen:
    """One request the back end received."""

    method: str
    raw_path: str  # as sent, still percent-encoded
    headers: dict
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.raw_path).path

    @property
    def query(self) -> dict:
        return parse_qs(urlsplit(self.raw_path).query, keep_blank_values=True)


@dataclass
class BackEnd:
    """A real HTTP server on 127.0.0.1 in a thread of its own. What it answers depends on the
    first path segment (see `_Handler`); it records every request."""

    server: http.server.ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def netloc(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"


class _Handler(http.server.BaseHTTPRequestHandler):
    """/orders/<id>: {"order_id", "status", "eta"} · /echo/...: the request itself as JSON ·
    /status/<code>: that status · /slow/...: answers after 3 s · /text/...: HTML ·
    /big/...: 200 KB of JSON with its length · /stream-big/...: 200 KB with no length ·
    /partial/...: JSON without "status" · /redirect/...: 302 to ?to= · /empty/...: 204."""

    back_end: BackEnd

    def log_message(self, *args) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.back_end.seen.append(Seen(self.command, self.path, dict(self.headers), body))
        parts = urlsplit(self.path).path.strip("/").split("/")
        kind, rest = parts[0], [unquote(p) for p in parts[1:]]
        if kind == "orders":
            self._json({"order_id": rest[0], "status": "shipped", "eta": "2030-01-02"})
        elif kind == "echo":
            self._json(
                {
                    "method": self.command,
                    "path": self.path,
                    "segments": rest,
                    "body": json.loads(body) if body else None,
                    "status": "echoed",
                    "order_id": rest[0] if rest else "",
                }
            )
        elif kind == "status":
            self._json({"error": "no"}, status=int(rest[0]))
        elif kind == "slow":
            time.sleep(3)
            self._json({"order_id": "A1001", "status": "late"})
        elif kind == "text":
            self._raw(200, b"<html><body>Welcome</body></html>", "text/html", length=True)
        elif kind == "big":
            self._raw(200, _big_json(), "application/json", length=True)
        elif kind == "stream-big":
            self._raw(200, _big_json(), "application/json", length=False)
        elif kind == "partial":
            self._json({"order_id": "A1001"})
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(urlsplit(self.path).query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "empty":
            self.send_response(204)
            self.end_headers()
        else:
            self._json({"error": "unknown"}, status=404)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _json(self, data: dict, status: int = 200) -> None:
        self._raw(status, json.dumps(data).encode(), "application/json", length=True)

    def _raw(self, status: int, body: bytes, content_type: str, *, length: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: fine
            pass
        if not length:
            self.close_connection = True


def _big_json() -> bytes:
    return json.dumps({"order_id": "A1001", "status": "x" * 200_000}).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a /slow request must not hold up the test's end


def start_back_end() -> tuple[BackEnd, threading.Thread]:
    server = _Server(("127.0.0.1", 0), _Handler)
    back_end = BackEnd(server)
    server.RequestHandlerClass = type("Handler", (_Handler,), {"back_end": back_end})
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return back_end, thread


# --- the widget's socket, as a verified customer or a visitor --------------------------------

HEADERS = [(b"origin", SHOP.encode())]


async def widget(connect, site, customer: str | None = "cust-42"):
    """A widget socket of `site`, verified as `customer` (None: a visitor)."""
    query = f"site={site.key}"
    if customer is not None:
        query += f"&customer_token={sign(site.identity_secret, customer)}"
    client, first = await connect(query, headers=HEADERS)
    if customer is not None:
        assert (await client.receive())["type"] == "customer.verified"
    return client, first


async def until(client, kind: str, *, timeout: float = 10) -> list[dict]:
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(await client.receive())
            if frames[-1]["type"] == kind:
                return frames


async def ask(client, text: str) -> list[dict]:
    await client.send({"type": "message", "text": text, "client_id": text[:20]})
    return await until(client, "bot.done")


def of_type(frames, kind: str) -> list[dict]:
    return [f for f in frames if f["type"] == kind]


def answer_text(frames) -> str:
    """What the answer shows: a second bot.start (`replace`) starts it anew."""
    last_start = max(i for i, f in enumerate(frames) if f["type"] == "bot.start")
    return "".join(f["text"] for f in frames[last_start:] if f["type"] == "bot.delta")
