"""Writes of the channels: an inbox made, a message taken in (or ignored), the outbox of what
the desk sends (queued inside the transaction of the message it carries), claimed, sent,
failed and resent."""

import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from chat import services as chat_services
from chat.handoff import handoff_request
from chat.knowledge.segment import guess_language
from chat.models import Conversation, Inbox, Message, Site
from connectors import kinds, selectors
from connectors.models import Inbound, Outbound
from connectors.sending import Outgoing

log = logging.getLogger("connectors")
Status = Outbound.Status
SILENT_NOTE = "Messages of this channel wait for an agent: the bot does not answer them."
# The desk's messages a channel carries to the customer, and an agent's decision on a draft.
CARRIED = {"message.bot", "message.agent"}
DRAFT_DECIDED = {"draft.sent": Status.PENDING, "draft.discarded": Status.DISCARDED}


class InvalidChannel(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def inbox_create(
    *, site: Site, kind: str, name: str, settings: dict, bot_mode: str = Inbox.BotMode.ANSWER
) -> Inbox:
    """A new channel of `site`; InvalidChannel with every problem of its settings."""
    found = kinds.problems(kind, settings)
    if bot_mode not in BOT_MODES:
        found.append(f"bot_mode: one of {', '.join(BOT_MODES)}")
    if found:
        raise InvalidChannel(found)
    return Inbox.objects.create(
        site=site, kind=kind, name=name[:200], settings=settings, bot_mode=bot_mode
    )


BOT_MODES = (Inbox.BotMode.ANSWER, Inbox.BotMode.DRAFT, Inbox.BotMode.SILENT)


# --- In -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intake:
    """What became of a message that arrived: `conversation` is set when it is to be taken
    in (then `inbound` is its log row); None when it was seen before or is ignored."""

    inbound: Inbound | None
    conversation: Conversation | None
    reason: str = ""


def inbound_begin(
    *,
    inbox: Inbox,
    external_id: str,
    contact: str,
    contact_name: str,
    subject: str,
    thread_ids: tuple[str, ...],
    text: str,
    ignore_reason: str | None,
) -> Intake:
    """Record a message that arrived, once per (inbox, external_id): ignored, or the
    conversation it goes into: the open one of the thread it answers, else a new one (in the
    queue for an agent, on a channel where the bot is silent)."""
    seen = selectors.inbound_seen(inbox_id=inbox.pk, external_id=external_id)
    if seen is not None:
        if seen.outcome == Inbound.Outcome.TAKING and seen.conversation is not None:
            return Intake(seen, seen.conversation)  # a crash before it was stored: again
        return Intake(None, None, "seen")
    fields = dict(
        inbox=inbox, external_id=external_id[:255], sender=contact[:254], subject=subject[:500]
    )
    try:
        with transaction.atomic():
            if ignore_reason:
                Inbound.objects.create(
                    **fields, outcome=Inbound.Outcome.IGNORED, reason=ignore_reason
                )
                return Intake(None, None, ignore_reason)
            conversation = selectors.thread_conversation(
                inbox_id=inbox.pk, ids=thread_ids, contact=contact
            ) or _conversation_new(inbox, contact, contact_name, subject, text)
            inbound = Inbound.objects.create(
                **fields, outcome=Inbound.Outcome.TAKING, conversation=conversation
            )
    except IntegrityError:  # another process took it meanwhile
        return Intake(None, None, "seen")
    if inbox.bot_mode == Inbox.BotMode.SILENT and conversation.status == Conversation.Status.BOT:
        handoff_request(conversation=conversation, note=SILENT_NOTE)
    return Intake(inbound, conversation)


def _conversation_new(
    inbox: Inbox, contact: str, contact_name: str, subject: str, text: str
) -> Conversation:
    conversation, _token = chat_services.conversation_start(
        site=inbox.site,
        language=guess_language(text) if text.strip() else inbox.site.language,
        channel=inbox.kind,
        inbox=inbox,
        contact=contact,
        metadata={"subject": subject},
    )
    email = contact if inbox.kind == Inbox.Kind.EMAIL else ""
    Conversation.objects.filter(pk=conversation.pk).update(
        customer_name=contact_name[:200], customer_email=email
    )
    conversation.customer_name, conversation.customer_email = contact_name[:200], email
    return conversation


def inbound_taken(*, inbound_id: int, message_id: int) -> None:
    Inbound.objects.filter(pk=inbound_id).update(
        outcome=Inbound.Outcome.TAKEN, message_id=message_id
    )


def inbound_refused(*, inbound_id: int, reason: str) -> None:
    """A message that could not go into its conversation (it closed meanwhile)."""
    Inbound.objects.filter(pk=inbound_id).update(outcome=Inbound.Outcome.IGNORED, reason=reason)


# --- Out ------------------------------------------------------------------------------------


def on_desk_event(sender, *, event: str, conversation_id, message=None, **_) -> None:
    """chat.hooks.desk_event's receiver: the bot's or an agent's message in a conversation
    a channel carries becomes an outbox row, in the caller's transaction (held back while it
    is the bot's draft in an inbox in "draft" mode, until an agent decides). No network."""
    if event in DRAFT_DECIDED and message is not None:
        Outbound.objects.filter(message=message, status=Status.HELD).update(
            status=DRAFT_DECIDED[event], next_try_at=timezone.now()
        )
        return
    if event not in CARRIED or message is None or not message.text.strip():
        return
    if Message.conversation.is_cached(message) and message.conversation.inbox_id is None:
        return  # the widget's and the APIs' conversations (most): no query on their answers
    inbox = (
        Inbox.objects.filter(conversations__pk=conversation_id, enabled=True)
        .only("pk", "kind", "settings", "bot_mode")
        .first()
    )
    if inbox is None or inbox.kind not in kinds.KINDS:
        return
    draft = event == "message.bot" and inbox.bot_mode == Inbox.BotMode.DRAFT
    if draft:
        chat_services.bot_message_hold_as_draft(message=message)
    now = timezone.now()
    Outbound.objects.create(
        conversation_id=conversation_id,
        message=message,
        inbox=inbox,
        status=Status.HELD if draft else Status.PENDING,
        external_id=kinds.KINDS[inbox.kind].new_outbound_id(inbox.settings),
        next_try_at=now,
        created_at=now,
    )


def outbound_claim(*, limit: int, lease_seconds: float) -> list[Outgoing]:
    """Take up to `limit` due rows for this process for `lease_seconds` (the conditional
    UPDATE lets one process of several win each row; one that dies lets it go at the end of
    the lease)."""
    now = timezone.now()
    claimed = []
    rows = selectors.deliverable(now).select_related("inbox__site", "conversation", "message")
    for row in rows[: limit * 2]:
        won = (
            Outbound.objects.filter(pk=row.pk, status=Status.PENDING)
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
            .update(locked_until=now + timedelta(seconds=lease_seconds))
        )
        if won:
            thread = selectors.thread_before(
                conversation=row.conversation, message_id=row.message_id
            )
            claimed.append(
                Outgoing(row.pk, row.inbox, row.conversation, row.message, row.external_id, thread)
            )
            if len(claimed) == limit:
                break
    return claimed


def outbound_sent(*, pk: int, external_id: str) -> None:
    """Record a row sent, with the channel's id of what was sent (the one chosen when it was
    written, for e-mail)."""
    now = timezone.now()
    Outbound.objects.filter(pk=pk, status=Status.PENDING).update(
        status=Status.SENT,
        tries=F("tries") + 1,
        last_error="",
        sent_at=now,
        locked_until=None,
        external_id=external_id[:255],
    )


def outbound_failed(*, pk: int, error: str, final: bool = False) -> str:
    """Record a failed try: tried again after a backoff, or dead after the last try (or at
    once when `final`: the channel will never take it). Returns "retry" or "dead"."""
    cfg = settings.CONNECTORS
    now = timezone.now()
    with transaction.atomic():
        tries = Outbound.objects.filter(pk=pk).values_list("tries", flat=True).first()
        if tries is None:
            return "dead"
        tries += 1
        dead = final or tries >= cfg["MAX_ATTEMPTS"]
        Outbound.objects.filter(pk=pk, status=Status.PENDING).update(
            status=Status.DEAD if dead else Status.PENDING,
            tries=tries,
            last_error=error[:500],
            next_try_at=now if dead else now + backoff(tries),
            locked_until=None,
        )
    return "dead" if dead else "retry"


def backoff(tries: int) -> timedelta:
    """Doubling from BACKOFF_BASE_SECONDS up to BACKOFF_MAX_SECONDS, with jitter (half to
    all of it), so messages that failed together do not all come back in the same second."""
    cfg = settings.CONNECTORS
    ceiling = min(cfg["BACKOFF_MAX_SECONDS"], cfg["BACKOFF_BASE_SECONDS"] * 2 ** (tries - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def outbound_resend(*, pks) -> int:
    """Queue these rows again, at once, with a fresh count of tries (admin's resend). The
    Message-ID stays: a client that has the mail already threads it as the same one."""
    now = timezone.now()
    in_flight = Q(status=Status.PENDING, locked_until__gt=now)
    return (
        Outbound.objects.filter(pk__in=list(pks))
        .exclude(in_flight)
        .update(status=Status.PENDING, tries=0, next_try_at=now, locked_until=None, sent_at=None)
    )
