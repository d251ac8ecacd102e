"""Run by tests/answers/test_protocol.py in a process of its own: a real Daphne server (Twisted,
autobahn, Daphne's upgrade, runtime.wsframes' protocol) with the garbage collector off,
`N` WebSocket clients that connect and close, then a count of the per-connection objects
still alive. With the collector off, only what reference counting freed is gone: any left
is held by a reference cycle, which in a server would wait for a full collection.

    python -m tests.closed_sockets_left N
"""

import gc
import json
import sys
import threading
import time
from collections import Counter

gc.disable()

from daphne.server import Server  # noqa: E402  (installs Twisted's asyncio reactor)
from twisted.internet import reactor  # noqa: E402

from runtime import wsframes  # noqa: E402

KINDS = ("BoundedWebSocketProtocol", "HTTPChannel", "WebRequest")


async def application(scope, receive, send):
    """Accept a socket, then wait for it to go."""
    while True:
        event = await receive()
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif event["type"] == "websocket.disconnect":
            return


def clients(server: Server, count: int) -> None:
    from websockets.sync.client import connect

    deadline = time.monotonic() + 30
    while not server.listening_addresses and time.monotonic() < deadline:
        time.sleep(0.02)
    host, port = server.listening_addresses[0]
    sockets = [connect(f"ws://{host}:{port}/") for _ in range(count)]
    opened = sum(type(o).__name__ == "BoundedWebSocketProtocol" for o in gc.get_objects())
    for socket in sockets:
        socket.close()
    del sockets
    # Daphne forgets a connection once its application has ended (checked every second).
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    reactor.callFromThread(report, opened)


def report(opened: int) -> None:
    left = Counter(type(o).__name__ for o in gc.get_objects())
    print(json.dumps({"opened": opened, "left": {kind: left[kind] for kind in KINDS}}), flush=True)
    reactor.stop()


def main() -> None:
    count = int(sys.argv[1])
    wsframes.install(max_message_bytes=20_000)
    server = Server(
        application=application,
        endpoints=["tcp:port=0:interface=127.0.0.1"],
        signal_handlers=False,
        verbosity=0,
    )
    threading.Thread(target=clients, args=(server, count), daemon=True).start()
    server.run()


if __name__ == "__main__":
    main()
