"""Reads of the channels: which conversation a message belongs to, the thread an outgoing
message goes into, and the outbox rows due now."""

from datetime import datetime

from django.db.models import Exists, OuterRef, Q, QuerySet

from chat.models import Conversation, Inbox, Message
from connectors.models import Inbound, Outbound
from connectors.sending import Thread

Status = Outbound.Status


def enabled_inboxes(kind: str) -> list[Inbox]:
    return list(Inbox.objects.filter(kind=kind, enabled=True).select_related("site"))


def any_inbox_enabled() -> bool:
    return Inbox.objects.filter(enabled=True).exists()


def inbound_seen(*, inbox_id: int, external_id: str) -> Inbound | None:
    return (
        Inbound.objects.filter(inbox_id=inbox_id, external_id=external_id)
        .select_related("conversation")
        .first()
    )


def thread_conversation(
    *, inbox_id: int, ids: tuple[str, ...], contact: str
) -> Conversation | None:
    """The open conversation of this inbox and customer that one of `ids` (the Message-IDs a
    mail answers) belongs to: a message the desk sent in it, or one the customer sent."""
    if not ids:
        return None
    ours = Outbound.objects.filter(inbox_id=inbox_id, external_id__in=ids).values("conversation_id")
    theirs = Inbound.objects.filter(
        inbox_id=inbox_id, external_id__in=ids, conversation__isnull=False
    ).values("conversation_id")
    return (
        Conversation.objects.filter(Q(pk__in=ours) | Q(pk__in=theirs))
        .filter(inbox_id=inbox_id, contact=contact)
        .exclude(status=Conversation.Status.CLOSED)
        .order_by("-last_message_at", "-created_at")
        .first()
    )


def thread_before(*, conversation: Conversation, message_id: int) -> Thread:
    """Where a message of the desk's goes in the customer's thread: the newest customer mail
    before it is the one it answers; every mail of the conversation before it, the customer's
    and the desk's, oldest first, are its references."""
    theirs = [
        (pk, (metadata or {}).get("email", {}).get("message_id", ""))
        for pk, metadata in Message.objects.filter(
            conversation=conversation, role=Message.Role.CUSTOMER, pk__lt=message_id
        ).values_list("pk", "metadata")
    ]
    ours = list(
        Outbound.objects.filter(conversation=conversation, message_id__lt=message_id)
        .exclude(external_id="")
        .values_list("message_id", "external_id")
    )
    chain = [mid for _, mid in sorted(theirs + ours) if mid]
    answered = next((mid for _, mid in reversed(theirs) if mid), "")
    return Thread(
        subject=(conversation.metadata or {}).get("subject", ""),
        in_reply_to=answered,
        references=tuple(chain),
    )


def deliverable(now: datetime) -> QuerySet[Outbound]:
    """Pending rows due now, held by no process, each the oldest pending one of its
    conversation: the customer gets the desk's messages in the order they were written."""
    earlier = Outbound.objects.filter(
        conversation_id=OuterRef("conversation_id"), status=Status.PENDING, id__lt=OuterRef("id")
    )
    return (
        Outbound.objects.filter(status=Status.PENDING, next_try_at__lte=now, inbox__enabled=True)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .exclude(Exists(earlier))
        .order_by("id")
    )
