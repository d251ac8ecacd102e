"""Outbound webhooks: the URLs a company subscribed, and the outbox of deliveries to them.

A delivery row is written in the same transaction as the change that caused its event, and
is the only record of it: the delivery process (manage.py run_webhooks) sends from these rows,
so a receiver's outage, or a restart of the desk, loses nothing.
"""

import secrets
import uuid

from django.db import models

from webhooks.events import EVENTS

SECRET_BYTES = 32  # as long as the HMAC-SHA256 hash: a shorter key would weaken it


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(SECRET_BYTES)


class WebhookEndpoint(models.Model):
    """A company's URL that receives the events it subscribed to, signed with its secret."""

    site = models.ForeignKey(
        "chat.Site", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000, help_text="https only in production; no redirects.")
    events = models.JSONField(
        default=list,
        help_text="Names of the events to send, e.g. " + ", ".join(EVENTS[:3]) + " …",
    )
    # Needed in clear to sign every delivery; shown once in admin when created, never logged.
    secret = models.CharField(max_length=100, default=new_secret, editable=False)
    active = models.BooleanField(
        default=True, help_text="Off: no new deliveries are queued; queued ones wait."
    )
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["site_id", "pk"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one endpoint: the outbox row, and after it the delivery log."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (first try, or waiting to retry)"
        DELIVERED = "delivered", "Delivered"
        DEAD = "dead", "Dead (gave up; redeliver to try again)"

    # Deliveries of one endpoint and conversation go out in the order of their ids (the order
    # of their writes, which one conversation's row lock serialises), one at a time.
    id = models.BigAutoField(primary_key=True)
    # Sent as X-Desk-Delivery: this row, whichever try.
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=40)
    event_id = models.CharField(max_length=40, db_index=True)  # the body's "id": shared by
    # every endpoint's copy, and the same on a redelivery, so receivers can drop repeats
    conversation_id = models.CharField(max_length=64, db_index=True)
    # The body exactly as signed and sent: a retry or redelivery sends the same bytes.
    body = models.TextField()
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    # A delivery process holds a claimed row until then; after a crash another takes it over.
    locked_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=["endpoint", "conversation_id", "status", "id"], name="webhook_order"
            ),
            models.Index(fields=["status", "next_attempt_at"], name="webhook_due"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.status})"
