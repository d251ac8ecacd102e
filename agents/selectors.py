"""Reads of the agent console. Views and the console consumer get their data here.

Unread count (kept simple on purpose): the customer messages newer than the conversation's last
bot or agent message, and zero once I have opened the conversation after the newest of them
(and always zero for closed conversations).
"Opened" is remembered per agent in the session (`seen`: conversation id → newest customer
message id seen), so it needs no table and costs nothing when nobody looks.
"""

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import CannedReply, Ticket
from chat import customers
from chat.customers import VerifiedCustomer
from chat.models import Conversation, Feedback, Message

Status = Conversation.Status
Role = Message.Role

GROUP_LIMIT = 50  # rows per inbox group; the search reaches the rest
CLOSED_LIMIT = 20  # recently closed conversations shown
SNIPPET_CHARS = 90
_ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,36}$")


# --- Inbox ----------------------------------------------------------------------------------


@dataclass
class InboxGroup:
    key: str
    title: str
    rows: list[Conversation]
    total: int

    @property
    def more(self) -> int:
        return self.total - len(self.rows)


@dataclass
class Inbox:
    groups: list[InboxGroup]
    query: str = ""
    waiting: int = 0
    unread_mine: int = 0
    by_key: dict = field(default_factory=dict)
    channel: str = ""  # the channel the list is filtered to ("": all)

    @property
    def channel_label(self) -> str:
        return dict(Conversation.Channel.choices).get(self.channel, "")


# The channels the console's list can be filtered to: every one customers write from.
CONSOLE_CHANNELS = [
    (value, label)
    for value, label in Conversation.Channel.choices
    if value != Conversation.Channel.PLAYGROUND
]


def _annotated(qs: QuerySet) -> QuerySet:
    """Rows with what the inbox shows: last message, its role, the last answer's id, unread."""
    # A bot answer still streaming is stored empty: the snippet shows the message before it.
    last = (
        Message.objects.filter(conversation=OuterRef("pk"))
        .exclude(role=Role.SYSTEM)
        .exclude(text="")
        .order_by("-id")
    )
    last_answer = Message.objects.filter(
        conversation=OuterRef("pk"), role__in=[Role.BOT, Role.AGENT]
    ).order_by("-id")
    last_customer = Message.objects.filter(
        conversation=OuterRef("pk"), role=Role.CUSTOMER
    ).order_by("-id")
    return (
        qs.select_related("site", "assigned_agent", "inbox")
        .annotate(
            last_text=Subquery(last.values("text")[:1]),
            last_role=Subquery(last.values("role")[:1]),
            last_answer_id=Coalesce(
                Subquery(last_answer.values("id")[:1]), Value(0), output_field=IntegerField()
            ),
            last_customer_id=Coalesce(
                Subquery(last_customer.values("id")[:1]), Value(0), output_field=IntegerField()
            ),
            activity_at=Coalesce("last_message_at", "created_at"),
        )
        .annotate(
            unread_raw=Count(
                "messages",
                filter=Q(messages__role=Role.CUSTOMER, messages__id__gt=F("last_answer_id")),
            )
        )
    )


def _search(qs: QuerySet, query: str) -> QuerySet:
    query = query.strip()
    if not query:
        return qs
    match = (
        Q(customer_name__icontains=query)
        | Q(customer_email__icontains=query)
        | Exists(Message.objects.filter(conversation=OuterRef("pk"), text__icontains=query))
    )
    if _ID_PREFIX.match(query):
        match |= Q(id__istartswith=query)
    return qs.filter(match)


def inbox(
    *, user: AbstractBaseUser, query: str = "", seen: dict | None = None, channel: str = ""
) -> Inbox:
    """The console's inbox for `user`, optionally filtered by `query` (message text, customer
    name or e-mail, conversation id or its first characters) and by `channel` (one of
    CONSOLE_CHANNELS; anything else: all)."""
    seen = seen or {}
    # Staff trying the bot in the playground are not customers.
    base = _search(Conversation.objects.exclude(channel=Conversation.Channel.PLAYGROUND), query)
    channel = channel if channel in dict(CONSOLE_CHANNELS) else ""
    if channel:
        base = base.filter(channel=channel)
    specs = [
        (
            "waiting",
            "Waiting for a human",
            base.filter(status=Status.WAITING),
            ["handoff_requested_at", "created_at"],
            GROUP_LIMIT,
        ),
        (
            "mine",
            "Mine",
            base.filter(status=Status.HUMAN, assigned_agent=user),
            ["-activity_at"],
            GROUP_LIMIT,
        ),
        (
            "others",
            "Other agents",
            base.filter(status=Status.HUMAN).exclude(assigned_agent=user),
            ["-activity_at"],
            GROUP_LIMIT,
        ),
        ("bot", "Bot is answering", base.filter(status=Status.BOT), ["-activity_at"], GROUP_LIMIT),
        (
            "closed",
            "Recently closed",
            base.filter(status=Status.CLOSED),
            ["-closed_at", "-created_at"],
            CLOSED_LIMIT,
        ),
    ]
    groups = []
    for key, title, qs, ordering, limit in specs:
        rows = list(_annotated(qs).order_by(*ordering)[:limit])
        for row in rows:
            read = key == "closed" or seen.get(str(row.pk), 0) >= row.last_customer_id
            row.unread = 0 if read else row.unread_raw
            row.snippet = _snippet(row.last_text or "")
            row.customer_label = customer_label(row)
        total = len(rows) if len(rows) < limit else qs.count()
        groups.append(InboxGroup(key=key, title=title, rows=rows, total=total))
    by_key = {g.key: g for g in groups}
    return Inbox(
        groups=groups,
        query=query.strip(),
        waiting=by_key["waiting"].total,
        unread_mine=sum(r.unread for r in by_key["mine"].rows),
        by_key=by_key,
        channel=channel,
    )


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


def customer_label(conversation: Conversation) -> str:
    """Name, else e-mail, else "Visitor " and the id's first 8 characters."""
    return (
        conversation.customer_name
        or conversation.customer_email
        or f"Visitor {str(conversation.pk)[:8]}"
    )


@dataclass(frozen=True)
class CustomerVerification:
    customer: VerifiedCustomer
    current: bool  # the company still vouches for them (the token has not expired)


def customer_verification(conversation: Conversation) -> CustomerVerification | None:
    """The verified customer of the conversation, and whether the verification still holds;
    None when no one was verified in it."""
    customer = customers.customer_of(conversation)
    if customer is None:
        return None
    return CustomerVerification(customer=customer, current=customer.is_current())


def newest_customer_message_id(*, conversation_id) -> int:
    return (
        Message.objects.filter(conversation_id=conversation_id, role=Role.CUSTOMER)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
        or 0
    )


# --- One conversation -----------------------------------------------------------------------


def parse_conversation_id(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def conversation_for_console(*, conversation_id) -> Conversation | None:
    return (
        Conversation.objects.select_related("site", "assigned_agent", "inbox")
        .filter(pk=conversation_id)
        .first()
    )


def conversation_exists(*, conversation_id) -> bool:
    return Conversation.objects.filter(pk=conversation_id).exists()


def holds(*, conversation_id, user: AbstractBaseUser) -> bool:
    """True when `user` is the agent answering this conversation now."""
    return Conversation.objects.filter(
        pk=conversation_id, status=Status.HUMAN, assigned_agent=user
    ).exists()


def transcript(*, conversation_id) -> list[Message]:
    """Every message, oldest first, with its author and the customer's rating if any, and
    (`calls`) the calls of the company's back end a bot answer made, oldest first.
    `streaming` marks a bot answer still being written (stored empty until it ends); one
    older than the answer deadline was cut off by a crash and is shown as it is."""
    messages = list(
        Message.objects.filter(conversation_id=conversation_id)
        .select_related("author", "feedback")
        .prefetch_related("action_calls")
        .order_by("id")
    )
    since = timezone.now() - dt.timedelta(seconds=settings.CHAT["ANSWER_TIMEOUT_SECONDS"] + 30)
    for m in messages:
        m.calls = list(m.action_calls.all())
        m.streaming = (
            m.role == Role.BOT and m.is_partial and not m.finish_reason and m.created_at > since
        )
    return messages


@dataclass
class Ratings:
    up: int
    down: int
    csat_score: int | None
    csat_comment: str


def ratings(*, conversation: Conversation) -> Ratings:
    counts = Feedback.objects.filter(message__conversation=conversation).aggregate(
        up=Count("id", filter=Q(rating=Feedback.Rating.UP)),
        down=Count("id", filter=Q(rating=Feedback.Rating.DOWN)),
    )
    return Ratings(
        up=counts["up"],
        down=counts["down"],
        csat_score=conversation.csat_score,
        csat_comment=conversation.csat_comment,
    )


def conversation_tickets(*, conversation_id) -> list[Ticket]:
    return list(
        Ticket.objects.filter(conversation_id=conversation_id)
        .select_related("assignee")
        .order_by("-created_at")
    )


# --- Tickets --------------------------------------------------------------------------------


def ticket_list(
    *, user: AbstractBaseUser, status: str = "", priority: str = "", assignee: str = ""
) -> list[Ticket]:
    """Tickets, newest change first. `assignee`: "me", "unassigned" or "" (anyone)."""
    qs = Ticket.objects.select_related("assignee", "conversation").annotate(
        note_count=Count("notes")
    )
    if status in Ticket.Status.values:
        qs = qs.filter(status=status)
    elif status == "unsolved":
        qs = qs.exclude(status=Ticket.Status.SOLVED)
    if priority in Ticket.Priority.values:
        qs = qs.filter(priority=priority)
    if assignee == "me":
        qs = qs.filter(assignee=user)
    elif assignee == "unassigned":
        qs = qs.filter(assignee__isnull=True)
    return list(qs.order_by("-updated_at")[:200])


def ticket_detail(*, ticket_id: int) -> Ticket | None:
    return Ticket.objects.select_related("assignee", "conversation").filter(pk=ticket_id).first()


def ticket_notes(*, ticket_id: int) -> list:
    ticket = Ticket.objects.filter(pk=ticket_id).first()
    return list(ticket.notes.select_related("author")) if ticket else []


def staff_users() -> list:
    return list(
        get_user_model()
        .objects.filter(is_staff=True, is_active=True)
        .order_by("first_name", "last_name", "username")
    )


def staff_user(*, user_id) -> AbstractBaseUser | None:
    try:
        pk = int(user_id)
    except (TypeError, ValueError):
        return None
    return get_user_model().objects.filter(pk=pk, is_staff=True, is_active=True).first()


# --- Canned replies -------------------------------------------------------------------------


def canned_replies(*, query: str = "", limit: int | None = None) -> list[CannedReply]:
    """Shortcuts starting with `query` first, then those whose title contains it."""
    query = query.strip().lstrip("/").lower()
    qs = CannedReply.objects.all()
    if query:
        qs = qs.filter(Q(shortcut__startswith=query) | Q(title__icontains=query))
    replies = sorted(qs, key=lambda r: (not r.shortcut.startswith(query), r.shortcut))
    return replies[:limit] if limit else replies


def canned_reply(*, reply_id) -> CannedReply | None:
    return CannedReply.objects.filter(pk=reply_id).first()


def canned_shortcut_taken(*, shortcut: str, exclude_id: int | None = None) -> bool:
    qs = CannedReply.objects.filter(shortcut=shortcut.strip().lstrip("/").lower())
    if exclude_id is not None:
        qs = qs.exclude(pk=exclude_id)
    return qs.exists()
