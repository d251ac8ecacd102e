"""What goes in and out through a site's channels (chat.models.Inbox): the log of what was
taken in (which is also how nothing is taken twice), and the outbox of what is sent.

An outbound row is written in the same transaction as the bot's or the agent's message it
carries, and is the only record of it: the connectors process (manage.py run_connectors)
sends from these rows, so a mail server's outage, or a restart, loses nothing.
"""

from django.db import models


class Inbound(models.Model):
    """One message that arrived through a channel, taken into a conversation or ignored."""

    class Outcome(models.TextChoices):
        TAKING = "taking", "Being taken in"
        TAKEN = "taken", "Taken into a conversation"
        IGNORED = "ignored", "Ignored (never answered)"

    inbox = models.ForeignKey("chat.Inbox", on_delete=models.CASCADE, related_name="inbound")
    # The channel's id of the message (an e-mail's Message-ID): seen once per inbox, so a
    # message read again (a restart before the mailbox was told) is not taken twice.
    external_id = models.CharField(max_length=255)
    sender = models.CharField(max_length=254, blank=True)
    subject = models.CharField(max_length=500, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    # Why it was ignored: "auto-reply", "bounce", "loop", "empty".
    reason = models.CharField(max_length=40, blank=True)
    conversation = models.ForeignKey(
        "chat.Conversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    message = models.ForeignKey(
        "chat.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "inbound message"
        constraints = [
            models.UniqueConstraint(fields=["inbox", "external_id"], name="inbound_once")
        ]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.outcome})"


class Outbound(models.Model):
    """One message of the desk's (the bot's or an agent's) to send through a channel."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (first try, or waiting to retry)"
        HELD = "held", "Held (the bot's draft: waits for an agent to send it)"
        SENT = "sent", "Sent"
        DEAD = "dead", "Dead (gave up; resend to try again)"
        DISCARDED = "discarded", "Discarded (a draft an agent did not send)"

    # Rows of one conversation go out in the order of their ids, one at a time.
    id = models.BigAutoField(primary_key=True)
    conversation = models.ForeignKey(
        "chat.Conversation", on_delete=models.CASCADE, related_name="+"
    )
    message = models.ForeignKey("chat.Message", on_delete=models.CASCADE, related_name="+")
    inbox = models.ForeignKey("chat.Inbox", on_delete=models.PROTECT, related_name="outbound")
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    tries = models.PositiveIntegerField(default=0)
    next_try_at = models.DateTimeField(db_index=True)
    # A connectors process holds a claimed row until then; after a crash another takes it over.
    locked_until = models.DateTimeField(null=True, blank=True)
    # The channel's id of what was sent, chosen when the row is written so that every try
    # sends the same one: an e-mail's Message-ID.
    external_id = models.CharField(max_length=255, db_index=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "outbound message"
        indexes = [
            models.Index(fields=["conversation", "status", "id"], name="outbound_order"),
            models.Index(fields=["status", "next_try_at"], name="outbound_due"),
        ]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.status})"
