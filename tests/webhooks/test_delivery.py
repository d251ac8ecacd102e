"""The delivery loop against a real HTTP receiver on localhost: refused connections, then
HTTP 500s, then recovery; every event arrives once, in order per conversation, signed. A
delivery that keeps failing goes dead and admin's redeliver sends it again."""

import asyncio
import time
from collections import defaultdict

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client import REGISTRY

from chat import services
from tests.webhooks.helpers import Receiver, free_port, verified
from webhooks.delivery import Deliverer
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)
Status = WebhookDelivery.Status


async def until(check, timeout=20.0):
    """Wait until `check()` (run against the database) is true."""
    deadline = time.monotonic() + timeout
    while not await sync_to_async(check)():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


def all_delivered() -> bool:
    return not WebhookDelivery.objects.exclude(status=Status.DELIVERED).exists()


def delivered_count(outcome: str) -> float:
    return REGISTRY.get_sample_value("cs_webhook_deliveries_total", {"outcome": outcome}) or 0.0


def chat(site, conversations=2, messages=3) -> dict[str, list[str]]:
    """Conversations talking at once (their writes interleaved); conversation id → the event
    ids queued for it, in the order they happened."""
    started = [services.conversation_start(site=site)[0] for _ in range(conversations)]
    for n in range(messages):
        for conversation in started:
            services.message_add_customer(
                conversation=conversation, text=f"m{n}", client_id=f"c{n}"
            )
    expected = defaultdict(list)
    for row in WebhookDelivery.objects.order_by("id"):
        expected[row.conversation_id].append(row.event_id)
    return dict(expected)


def test_an_outage_then_recovery_delivers_every_event_once_in_order_signed(
    endpoint, site, fast_retries
):
    port = free_port()
    endpoint.url = f"http://127.0.0.1:{port}/hooks?token=receiver-own"
    endpoint.save()
    expected = chat(site)
    assert sum(map(len, expected.values())) == 8
    # Nothing listens on the port at first; then the receiver answers 500 five times.
    receiver = Receiver(port, answer=lambda n: 500 if n < 5 else 200)
    before = {outcome: delivered_count(outcome) for outcome in ("delivered", "retry")}

    async def scenario():
        deliverer = Deliverer(concurrency=4)
        task = asyncio.create_task(deliverer.run())
        try:
            await until(lambda: WebhookDelivery.objects.filter(attempts__gte=2).count() >= 2)
            refused = await sync_to_async(
                lambda: list(
                    WebhookDelivery.objects.filter(attempts__gte=1).values_list(
                        "last_error", flat=True
                    )
                )
            )()
            assert refused and all("ConnectError" in error for error in refused)
            receiver.start()
            await until(all_delivered)
        finally:
            deliverer.stop()
            await asyncio.wait_for(task, 10)

    try:
        asyncio.run(scenario())
    finally:
        receiver.stop()

    assert [hit.status for hit in receiver.hits[:5]] == [500] * 5
    events = [verified(hit, endpoint.secret) for hit in receiver.hits]
    accepted = [verified(hit, endpoint.secret)["id"] for hit in receiver.accepted()]
    assert sorted(accepted) == sorted(sum(expected.values(), []))  # each event, once
    assert len(accepted) == len(set(accepted))
    for conversation_id, ids in expected.items():
        # Every try of this conversation, failed ones included, in the order of its events:
        # a later event is never sent before an earlier one got through.
        tried = [event["id"] for event in events if event["conversation_id"] == conversation_id]
        assert [ids.index(event_id) for event_id in tried] == sorted(ids.index(e) for e in tried)
        assert [event_id for event_id in accepted if event_id in ids] == ids
    for hit in receiver.accepted():
        row = WebhookDelivery.objects.get(event_id=hit.event["id"])
        assert hit.headers["X-Desk-Delivery"] == str(row.delivery_id)
        assert (row.last_status_code, row.last_error) == (200, "")
        assert row.delivered_at is not None
    assert WebhookDelivery.objects.filter(attempts__gte=2).exists()  # retried, not lost
    assert delivered_count("delivered") - before["delivered"] == 8
    # Five 500s and at least two refused connections, each a retry, none dead.
    assert delivered_count("retry") - before["retry"] >= 7


def test_a_dead_delivery_lets_the_next_go_and_admin_redelivers_it(
    endpoint, site, fast_retries, settings
):
    settings.WEBHOOKS = {**fast_retries, "MAX_ATTEMPTS": 2}
    port = free_port()
    endpoint.url = f"http://127.0.0.1:{port}/hooks"
    endpoint.save()
    conversation, _ = services.conversation_start(site=site)
    first = WebhookDelivery.objects.get()
    # The first event is refused for good; the ones after it are accepted.
    receiver = Receiver(port, answer=lambda n: 410 if n < 2 else 200).start()

    async def deliver_until(check):
        deliverer = Deliverer(concurrency=2)
        task = asyncio.create_task(deliverer.run())
        try:
            await until(check)
        finally:
            deliverer.stop()
            await asyncio.wait_for(task, 10)

    try:
        services.message_add_customer(conversation=conversation, text="hi", client_id="c1")
        asyncio.run(
            deliver_until(
                lambda: not WebhookDelivery.objects.filter(status=Status.PENDING).exists()
            )
        )
        first.refresh_from_db()
        assert (first.status, first.attempts, first.last_status_code, first.last_error) == (
            Status.DEAD,
            2,
            410,
            "HTTP 410",
        )
        # A dead event does not hold its conversation's later events back for ever.
        assert WebhookDelivery.objects.get(event="message.customer").status == Status.DELIVERED

        admin = get_user_model().objects.create_superuser("boss", password="pw")
        client = Client()
        client.force_login(admin)
        response = client.post(
            "/admin/webhooks/webhookdelivery/",
            {"action": "redeliver", "_selected_action": [first.pk]},
            follow=True,
        )
        assert response.status_code == 200
        assert "Queued 1 delivery again." in response.content.decode()
        first.refresh_from_db()
        assert (first.status, first.attempts) == (Status.PENDING, 0)
        asyncio.run(deliver_until(all_delivered))
    finally:
        receiver.stop()
    statuses = [(hit.event["type"], hit.status) for hit in receiver.hits]
    assert statuses == [
        ("conversation.created", 410),
        ("conversation.created", 410),
        ("message.customer", 200),
        ("conversation.created", 200),  # redelivered: the same body and event id
    ]
    assert receiver.hits[3].body == receiver.hits[0].body
    verified(receiver.hits[3], endpoint.secret)


def test_a_redirect_is_not_followed(endpoint, site, fast_retries, settings):
    settings.WEBHOOKS = {**fast_retries, "MAX_ATTEMPTS": 1}
    receiver = Receiver(free_port(), answer=lambda n: 307).start()
    endpoint.url = receiver.url
    endpoint.save()
    services.conversation_start(site=site)

    async def scenario():
        deliverer = Deliverer()
        task = asyncio.create_task(deliverer.run())
        await until(lambda: WebhookDelivery.objects.filter(status=Status.DEAD).exists())
        deliverer.stop()
        await asyncio.wait_for(task, 10)

    try:
        asyncio.run(scenario())
    finally:
        receiver.stop()
    assert len(receiver.hits) == 1
    assert WebhookDelivery.objects.get().last_status_code == 307
