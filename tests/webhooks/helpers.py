"""A real HTTP receiver on localhost for the webhook tests, and what it verifies."""

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from webhooks import signing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Hit:
    """One request the receiver got, and the status it answered."""

    headers: dict
    body: str
    status: int

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with `answer(hit_number)` (a status), after `delay` seconds."""

    port: int
    answer: Callable[[int], int] = lambda _n: 200
    delay: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks?token=receiver-own"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                time.sleep(receiver.delay)
                status = receiver.answer(len(receiver.hits))
                receiver.hits.append(Hit(dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def accepted(self) -> list[Hit]:
        return [hit for hit in self.hits if 200 <= hit.status < 300]


def verified(hit: Hit, secret: str) -> dict:
    """The event of a hit whose signature holds, as a receiver following the docs checks it."""
    signing.verify(secret, hit.body, hit.headers[signing.SIGNATURE_HEADER])
    event = hit.event
    assert hit.headers[signing.EVENT_HEADER] == event["type"]
    return event
