"""An ASGI application for tests/operations/test_daphne_shutdown.py: every WebSocket stays
open until cancelled and prints when it is. With DESK_SHUTDOWN_FIX=1 it installs
runtime.daphne_shutdown, as cs_site/asgi.py does."""

import asyncio
import os

from runtime import daphne_shutdown

if os.environ.get("DESK_SHUTDOWN_FIX") == "1":
    daphne_shutdown.install()


async def application(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    try:
        await asyncio.Event().wait()  # until cancelled
    except asyncio.CancelledError:
        print(f"cancelled {scope['path']}", flush=True)
        raise
