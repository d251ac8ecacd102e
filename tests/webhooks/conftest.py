import pytest

from chat.models import Site
from webhooks.events import EVENTS
from webhooks.models import WebhookEndpoint


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")


@pytest.fixture
def endpoint(site) -> WebhookEndpoint:
    """Subscribed to every event; its URL is replaced by tests that deliver."""
    return WebhookEndpoint.objects.create(
        site=site, url="http://127.0.0.1:9/hooks", events=list(EVENTS)
    )


@pytest.fixture
def fast_retries(settings):
    """Backoff in tenths of a second, so an outage and a recovery fit in a test."""
    settings.WEBHOOKS = {
        **settings.WEBHOOKS,
        "BACKOFF_BASE_SECONDS": 0.05,
        "BACKOFF_MAX_SECONDS": 0.3,
        "TIMEOUT_SECONDS": 2.0,
        "POLL_SECONDS": 0.05,
    }
    return settings.WEBHOOKS
