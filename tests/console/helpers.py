"""Staff users, their logged-in clients and the console WebSocket through the ASGI router."""

import asyncio
import json

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from tests.conftest import ORIGIN


def console_app():
    """The real ASGI application: router, the route's origin check and session auth."""
    from cs_site.asgi import application

    return application


def make_user(django_user_model, username, *, staff=True, first="", last=""):
    return django_user_model.objects.create_user(
        username=username,
        password="pw-" + username,
        is_staff=staff,
        first_name=first,
        last_name=last,
    )


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def console_socket(user=None, origin=ORIGIN, app=None) -> WebsocketCommunicator:
    headers = [origin] if origin else []
    if user is not None:
        client = await sync_to_async(client_for)(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    communicator = WebsocketCommunicator(app or console_app(), "/ws/console/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(ws, predicate, timeout=5) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.receive_from(timeout=timeout))
            if predicate(frame):
                return frame


async def send(ws, frame) -> None:
    await ws.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))


async def synced(ws) -> None:
    """Frames are handled in order: once the pong is back, everything sent before is done."""
    await send(ws, {"type": "ping"})
    await receive_until(ws, lambda f: f["type"] == "pong")
