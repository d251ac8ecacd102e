import asyncio
import contextlib

import pytest

from chat.models import Inbox, Site
from connectors.running import Connectors
from tests.connectors.email.helpers import Dovecot, SmtpServer

ADDRESS = "support@shop.test"


@pytest.fixture
def fast_connectors(settings):
    settings.CONNECTORS = {
        **settings.CONNECTORS,
        "BACKOFF_BASE_SECONDS": 0.05,
        "BACKOFF_MAX_SECONDS": 0.3,
        "TIMEOUT_SECONDS": 5.0,
        "POLL_SECONDS": 0.05,
        "IMAP_IDLE_SECONDS": 2.0,
        "IMAP_POLL_SECONDS": 0.2,
        "RECONNECT_FIRST_SECONDS": 0.1,
        "RECONNECT_MAX_SECONDS": 0.5,
    }
    return settings.CONNECTORS


@pytest.fixture
def dovecot():
    server = Dovecot().start()
    yield server
    server.close()


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")


@pytest.fixture
def inbox(site, dovecot, smtp_server) -> Inbox:
    return Inbox.objects.create(
        site=site,
        kind=Inbox.Kind.EMAIL,
        name="Support mail",
        settings={"address": ADDRESS, "imap_url": dovecot.url, "smtp_url": smtp_server.url},
    )


@contextlib.asynccontextmanager
async def running_connectors():
    """The connectors process's loop in this event loop, until the block ends."""
    connectors = Connectors()
    task = asyncio.create_task(connectors.run())
    try:
        yield connectors
    finally:
        connectors.stop()
        await asyncio.wait_for(task, 15)
