"""Admin: an endpoint's signing secret is shown once, when it is made or rolled, and never on
its page; the delivery log lists and filters the outbox."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat import services
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def boss() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("boss", password="pw"))
    return client


def test_the_secret_is_shown_once_when_the_endpoint_is_added(boss, site):
    response = boss.post(
        "/admin/webhooks/webhookendpoint/add/",
        {
            "site": site.pk,
            "url": "https://hooks.example.com/desk",
            "events": ["conversation.closed", "conversation.created"],
            "active": "on",
            "description": "",
        },
        follow=True,
    )
    page = response.content.decode()
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["conversation.created", "conversation.closed"]  # documented order
    assert re.fullmatch(r"whsec_[\w-]{43}", endpoint.secret)
    assert endpoint.secret in page and "not shown again" in page
    change = boss.get(f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/")
    assert change.status_code == 200 and endpoint.secret not in change.content.decode()


def test_rolling_the_secret_shows_the_new_one_once(boss, endpoint):
    old = endpoint.secret
    response = boss.post(
        "/admin/webhooks/webhookendpoint/",
        {"action": "roll_secret", "_selected_action": [endpoint.pk]},
        follow=True,
    )
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.secret in response.content.decode()


def test_the_delivery_log_lists_and_filters(boss, endpoint, site):
    conversation, _ = services.conversation_start(site=site)
    services.conversation_close(conversation=conversation, closed_by="The customer")
    WebhookDelivery.objects.filter(event="conversation.closed").update(
        status=WebhookDelivery.Status.DEAD, last_error="HTTP 503"
    )
    page = boss.get("/admin/webhooks/webhookdelivery/").content.decode()
    assert "conversation.created" in page and "HTTP 503" in page
    assert endpoint.secret not in page
    dead = boss.get("/admin/webhooks/webhookdelivery/?status__exact=dead").content.decode()
    rows = dead.split('id="result_list"')[1].split("</table>")[0]
    assert "HTTP 503" in rows and "conversation.created" not in rows
