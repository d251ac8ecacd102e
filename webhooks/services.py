"""Writes of the outbox: queue an event for the endpoints that subscribed to it (inside the
transaction of the change that caused it), claim due deliveries, record each try's outcome,
and re-queue a delivery by hand."""

import logging
import random
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from chat.models import Conversation, Message
from webhooks import events, selectors
from webhooks.models import WebhookDelivery, WebhookEndpoint, new_secret

logger = logging.getLogger(__name__)
Status = WebhookDelivery.Status


def on_desk_event(sender, *, event: str, conversation_id, **objects) -> None:
    """chat.hooks.desk_event's receiver: one outbox row per subscribed endpoint of the
    conversation's site, in the caller's transaction. No network, nothing else: this runs
    inside the chat's own writes."""
    site_id = _site_id(objects)
    if site_id is None:
        return  # a conversation of no site (the demo page's): no endpoint can subscribe
    if site_id is _UNKNOWN:
        sites = Conversation.objects.filter(pk=conversation_id).values("site_id")
        subscribed = WebhookEndpoint.objects.filter(active=True, site_id__in=sites)
    else:
        subscribed = WebhookEndpoint.objects.filter(active=True, site_id=site_id)
    endpoints = [
        endpoint for endpoint in subscribed.only("pk", "events") if event in endpoint.events
    ]
    if not endpoints:
        return
    envelope = events.envelope(event, conversation_id=conversation_id, **objects)
    body = events.encode(envelope)
    now = timezone.now()
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoint,
            event=event,
            event_id=envelope["id"],
            conversation_id=str(conversation_id),
            body=body,
            next_attempt_at=now,
            created_at=now,
        )
        for endpoint in endpoints
    )


_UNKNOWN = object()


def _site_id(objects: dict):
    """The conversation's site id from the event's objects when one of them holds it (its
    conversation, or a message whose conversation is loaded): every customer message and
    answer then saves a look-up. _UNKNOWN otherwise."""
    conversation = objects.get("conversation")
    if isinstance(conversation, Conversation):
        return conversation.site_id
    message = objects.get("message")
    if isinstance(message, Message) and Message.conversation.is_cached(message):
        return message.conversation.site_id
    return _UNKNOWN


@dataclass(frozen=True)
class Claimed:
    """A delivery a process now holds: what it needs to send it, and nothing to look up."""

    pk: int
    delivery_id: str
    event: str
    url: str
    secret: str
    body: str


def deliveries_claim(*, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` due deliveries (see selectors.deliverable) for this process, for
    `lease_seconds`: the conditional UPDATE lets one process of several win each row, and a
    process that dies holding one lets it go when the lease ends."""
    now = timezone.now()
    claimed = []
    candidates = selectors.deliverable(now).select_related("endpoint")[: limit * 2]
    for row in candidates:
        won = (
            WebhookDelivery.objects.filter(pk=row.pk, status=Status.PENDING)
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
            .update(locked_until=now + timedelta(seconds=lease_seconds))
        )
        if won:
            claimed.append(
                Claimed(
                    pk=row.pk,
                    delivery_id=str(row.delivery_id),
                    event=row.event,
                    url=row.endpoint.url,
                    secret=row.endpoint.secret,
                    body=row.body,
                )
            )
            if len(claimed) == limit:
                break
    return claimed


def delivery_succeeded(*, pk: int, status_code: int) -> None:
    now = timezone.now()
    WebhookDelivery.objects.filter(pk=pk, status=Status.PENDING).update(
        status=Status.DELIVERED,
        attempts=F("attempts") + 1,
        last_status_code=status_code,
        last_error="",
        last_attempt_at=now,
        delivered_at=now,
        locked_until=None,
    )


def delivery_failed(*, pk: int, status_code: int | None, error: str) -> str:
    """Record a failed try: retried after a backoff, or dead after the last attempt or once
    the event is too old. Returns the outcome ("retry" or "dead")."""
    cfg = settings.WEBHOOKS
    now = timezone.now()
    with transaction.atomic():
        row = WebhookDelivery.objects.filter(pk=pk).values("attempts", "created_at").first()
        if row is None:  # deleted with its endpoint meanwhile
            return "dead"
        attempts = row["attempts"] + 1
        too_old = now - row["created_at"] > timedelta(hours=cfg["MAX_AGE_HOURS"])
        dead = attempts >= cfg["MAX_ATTEMPTS"] or too_old
        WebhookDelivery.objects.filter(pk=pk, status=Status.PENDING).update(
            status=Status.DEAD if dead else Status.PENDING,
            attempts=attempts,
            last_status_code=status_code,
            last_error=error[:500],
            last_attempt_at=now,
            next_attempt_at=now if dead else now + backoff(attempts),
            locked_until=None,
        )
    return "dead" if dead else "retry"


def backoff(attempts: int) -> timedelta:
    """The wait after failed try number `attempts`: doubling from BACKOFF_BASE_SECONDS up to
    BACKOFF_MAX_SECONDS, with jitter (half to all of it) so that many deliveries that failed
    together (one receiver's outage) do not all come back in the same second."""
    cfg = settings.WEBHOOKS
    ceiling = min(cfg["BACKOFF_MAX_SECONDS"], cfg["BACKOFF_BASE_SECONDS"] * 2 ** (attempts - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def deliveries_redeliver(*, pks) -> int:
    """Queue these deliveries again, at once and with a fresh count of attempts (admin's
    redeliver). The body, its event id and the delivery id stay: a receiver that has it
    already can tell. Returns how many were queued."""
    now = timezone.now()
    # Not one a delivery process is sending right now: it would go out twice at once.
    in_flight = Q(status=Status.PENDING, locked_until__gt=now)
    return (
        WebhookDelivery.objects.filter(pk__in=list(pks))
        .exclude(in_flight)
        .update(
            status=Status.PENDING,
            attempts=0,
            next_attempt_at=now,
            locked_until=None,
            delivered_at=None,
        )
    )


def endpoint_secret_roll(*, endpoint: WebhookEndpoint) -> str:
    """A new signing secret, in use from the next try on; returned to be shown once."""
    endpoint.secret = new_secret()
    endpoint.save(update_fields=["secret"])
    return endpoint.secret


def describe(url: str) -> str:
    """An endpoint's URL for a log line: scheme and host only (a path or query may hold a
    token of the receiver's)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
