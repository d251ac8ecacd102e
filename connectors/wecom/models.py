"""What the desk keeps of a WeCom customer-service account: where its sync_msg reading stands
and the sync WeCom asked for, each customer's reply window and session state, and how far a
long outgoing message has gone (so a retry never sends a piece twice)."""

from django.db import models


class WeComAccount(models.Model):
    """One per WeCom inbox: the sync cursor, and the sync the last callback asked for."""

    inbox = models.OneToOneField("chat.Inbox", on_delete=models.CASCADE, related_name="wecom")
    # sync_msg's next_cursor after the last page whose messages are stored.
    cursor = models.CharField(max_length=255, blank=True)
    # The callback's Token (valid 10 minutes; sync_msg without one is rate-limited hard) and
    # when it came: set by the callback view, cleared by the sync that used it.
    sync_token = models.CharField(max_length=255, blank=True)
    sync_requested_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    # A hand-off to WeCom's servicers asked for by the desk and not yet carried out
    # (handover=wecom): set in the hand-off's transaction, done by the connectors process.
    handovers_pending = models.BooleanField(default=False)

    class Meta:
        verbose_name = "WeCom account"

    def __str__(self) -> str:
        return f"WeCom account of inbox {self.inbox_id}"


class WeComCustomer(models.Model):
    """One WeChat customer of one account: the reply window (window.py) and the session."""

    inbox = models.ForeignKey("chat.Inbox", on_delete=models.CASCADE, related_name="+")
    external_userid = models.CharField(max_length=128)
    last_customer_message_at = models.DateTimeField(null=True, blank=True)
    sent_since = models.PositiveIntegerField(default=0)
    # WeCom's session state (0 untreated, 1 bot, 2 queue, 3 servicer, 4 ended), as the
    # messages and session events last told it.
    service_state = models.PositiveSmallIntegerField(null=True, blank=True)
    servicer_userid = models.CharField(max_length=128, blank=True)
    # A hand-off to WeCom's servicers this customer waits for (handover=wecom).
    handover_pending = models.BooleanField(default=False)
    menu_sent = models.BooleanField(default=False)

    class Meta:
        verbose_name = "WeCom customer"
        constraints = [
            models.UniqueConstraint(fields=["inbox", "external_userid"], name="wecom_customer_once")
        ]

    def __str__(self) -> str:
        return f"{self.external_userid} (inbox {self.inbox_id})"


class WeComDelivery(models.Model):
    """How many pieces of one outbox row (connectors.Outbound, by id) WeCom has taken: a
    retry after a failure part-way starts at the next piece."""

    outbound_id = models.BigIntegerField(unique=True)
    pieces_sent = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "WeCom delivery"

    def __str__(self) -> str:
        return f"outbound {self.outbound_id}: {self.pieces_sent} sent"
