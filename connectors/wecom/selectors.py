"""Reads of the WeCom channel: which accounts have news to read, a customer's reply window
and session, how far an outgoing message has gone."""

from datetime import datetime

from chat.models import Conversation, Inbox
from connectors.wecom.models import WeComAccount, WeComCustomer, WeComDelivery
from connectors.wecom.window import ReplyWindow


def accounts_due(*, stale_before: datetime) -> list[tuple[Inbox, WeComAccount]]:
    """Enabled WeCom inboxes with a sync WeCom asked for, a hand-off to carry out, or no sync
    since `stale_before` (a lost callback is picked up by the next look)."""
    inboxes = Inbox.objects.filter(kind=Inbox.Kind.WECOM, enabled=True).select_related("site")
    accounts = {
        account.inbox_id: account
        for account in WeComAccount.objects.filter(inbox__in=[inbox.pk for inbox in inboxes])
    }
    due = []
    for inbox in inboxes:
        account = accounts.get(inbox.pk) or WeComAccount(inbox=inbox)
        if (
            account.sync_token
            or account.handovers_pending
            or account.synced_at is None
            or account.synced_at < stale_before
        ):
            due.append((inbox, account))
    return due


def enabled_inbox(inbox_id: int) -> Inbox | None:
    return Inbox.objects.filter(pk=inbox_id, kind=Inbox.Kind.WECOM, enabled=True).first()


def cursor(*, inbox_id: int) -> str:
    return (
        WeComAccount.objects.filter(inbox_id=inbox_id).values_list("cursor", flat=True).first()
        or ""
    )


def open_conversation(*, inbox_id: int, external_userid: str) -> Conversation | None:
    """The customer's conversation that is not closed: a WeChat chat is one thread."""
    return (
        Conversation.objects.filter(inbox_id=inbox_id, contact=external_userid)
        .exclude(status=Conversation.Status.CLOSED)
        .order_by("-created_at", "-pk")
        .first()
    )


def customer(*, inbox_id: int, external_userid: str) -> WeComCustomer | None:
    return WeComCustomer.objects.filter(inbox_id=inbox_id, external_userid=external_userid).first()


def reply_window(*, inbox_id: int, external_userid: str) -> tuple[ReplyWindow, int | None]:
    """The customer's reply window and WeCom's session state as last known (None: unknown)."""
    known = customer(inbox_id=inbox_id, external_userid=external_userid)
    if known is None:
        return ReplyWindow(), None
    window = ReplyWindow(
        last_customer_message_at=known.last_customer_message_at, sent_since=known.sent_since
    )
    return window, known.service_state


def pieces_sent(*, outbound_id: int) -> int:
    return (
        WeComDelivery.objects.filter(outbound_id=outbound_id)
        .values_list("pieces_sent", flat=True)
        .first()
        or 0
    )


def handovers_pending(*, inbox_id: int) -> list[WeComCustomer]:
    return list(WeComCustomer.objects.filter(inbox_id=inbox_id, handover_pending=True))


def menu_due(*, inbox_id: int, external_userid: str) -> bool:
    """Whether the "talk to a person" menu has yet to go to this customer."""
    return not WeComCustomer.objects.filter(
        inbox_id=inbox_id, external_userid=external_userid, menu_sent=True
    ).exists()
