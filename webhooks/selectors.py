"""Reads of the outbox."""

from datetime import datetime

from django.db.models import Exists, Min, OuterRef, Q, QuerySet

from webhooks.models import WebhookDelivery

Status = WebhookDelivery.Status


def deliverable(now: datetime) -> QuerySet[WebhookDelivery]:
    """Pending deliveries due now, held by no delivery process, each the oldest pending one of
    its endpoint and conversation: a later event waits until the earlier one is delivered or
    dead, so a receiver gets one conversation's events in order. Oldest first."""
    earlier = WebhookDelivery.objects.filter(
        endpoint_id=OuterRef("endpoint_id"),
        conversation_id=OuterRef("conversation_id"),
        status=Status.PENDING,
        id__lt=OuterRef("id"),
    )
    return (
        WebhookDelivery.objects.filter(
            status=Status.PENDING, next_attempt_at__lte=now, endpoint__active=True
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .exclude(Exists(earlier))
        .order_by("id")
    )


def queue_stats(now: datetime) -> tuple[int, float]:
    """(pending deliveries, age in seconds of the oldest one, 0 when none)."""
    pending = WebhookDelivery.objects.filter(status=Status.PENDING)
    oldest = pending.aggregate(oldest=Min("created_at"))["oldest"]
    return pending.count(), (now - oldest).total_seconds() if oldest else 0.0
