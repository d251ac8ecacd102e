"""Writes of the staff side: takeover, replies, hand-back, closing, tickets, notes, canned
replies. Each change is one transaction; its events go out after it commits. The customer's
side of a hand-off (asking for a human, leaving an e-mail address) is chat.handoff, which
calls the ticket work below through `STAFF_SIDE` (connected in AgentsConfig.ready).

Exactly one agent wins a takeover: the status moves from bot/waiting to human in a single
conditional UPDATE, which only one of any number of concurrent attempts can match.
"""

from asgiref.sync import async_to_sync
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from agents import presence
from agents.models import CannedReply, Ticket, TicketNote
from chat import group_events, hooks, memory, selectors
from chat.handoff import StaffSide, agent_name
from chat.models import Conversation, Message
from chat.prompting import fill_template
from chat.services import conversation_close, message_told, status_changed, system_note
from runtime.broadcast import after_commit

Status = Conversation.Status


class NotAllowed(Exception):
    """The action does not fit the conversation's state (someone else holds it, it is closed)."""


def _open_ticket(conversation: Conversation) -> Ticket:
    ticket = conversation.tickets.exclude(status=Ticket.Status.SOLVED).first()
    if ticket is not None:
        return ticket
    first = (
        conversation.messages.filter(role=Message.Role.CUSTOMER)
        .order_by("id")
        .values_list("text", flat=True)
        .first()
    )
    subject = (first or "Chat with a customer").splitlines()[0][:120]
    ticket = Ticket.objects.create(subject=subject, conversation=conversation)
    after_commit(
        (
            group_events.CONSOLE_GROUP,
            group_events.console_ticket(ticket_id=ticket.pk, reason="created"),
        )
    )
    return ticket


def _leave_contact(conversation: Conversation, email: str) -> None:
    ticket = _open_ticket(conversation)
    TicketNote.objects.create(ticket=ticket, text=f"Follow up by e-mail: {email}")
    after_commit(
        (
            group_events.CONSOLE_GROUP,
            group_events.console_ticket(ticket_id=ticket.pk, reason="contact"),
        )
    )


# What a customer's hand-off (chat.handoff) asks of the staff side.
STAFF_SIDE = StaffSide(
    open_ticket=lambda conversation: _open_ticket(conversation).subject,
    leave_contact=_leave_contact,
    agents_online=lambda: bool(presence.online_agent_ids()),
)


# --- Agent side -----------------------------------------------------------------------------


def takeover(*, conversation_id, agent: AbstractBaseUser) -> Conversation:
    """The agent takes the conversation from the bot (or the waiting queue)."""
    with transaction.atomic():
        won = Conversation.objects.filter(
            pk=conversation_id, status__in=[Status.BOT, Status.WAITING]
        ).update(status=Status.HUMAN, assigned_agent=agent, updated_at=timezone.now())
        conv = Conversation.objects.get(pk=conversation_id)
        if not won:
            holder = agent_name(conv.assigned_agent)
            raise NotAllowed(
                f"{holder} already holds this conversation."
                if holder
                else "This conversation can no longer be taken over."
            )
        name = agent_name(agent)
        system_note(conv, f"{name} joined the conversation.")
        Ticket.objects.filter(conversation=conv, assignee__isnull=True).exclude(
            status=Ticket.Status.SOLVED
        ).update(assignee=agent)
        status_changed(conv, Status.HUMAN, name)
        hooks.emit("agent.joined", conversation_id=conv.pk, agent=agent)
    return conv


def hand_back(*, conversation_id, agent: AbstractBaseUser) -> Conversation:
    """The bot answers again, with the whole transcript (agent turns included) as context."""
    with transaction.atomic():
        won = Conversation.objects.filter(
            pk=conversation_id, status=Status.HUMAN, assigned_agent=agent
        ).update(status=Status.BOT, assigned_agent=None, updated_at=timezone.now())
        if not won:
            raise NotAllowed("Only the agent holding the conversation can hand it back.")
        conv = Conversation.objects.get(pk=conversation_id)
        system_note(conv, f"{agent_name(agent)} handed the conversation back to the bot.")
        status_changed(conv, Status.BOT)
    return conv


def close(*, conversation_id, agent: AbstractBaseUser) -> Conversation:
    """The same close as the customer's (chat.services.conversation_close), by an agent."""
    conv = Conversation.objects.get(pk=conversation_id)
    if not conversation_close(conversation=conv, closed_by=agent_name(agent)):
        raise NotAllowed("The conversation is already closed.")
    return conv


def reply(*, conversation_id, agent: AbstractBaseUser, text: str) -> Message:
    """An agent's message to the customer; only the agent holding the conversation writes."""
    text = text.strip()
    if not text:
        raise NotAllowed("The reply is empty.")
    with transaction.atomic():
        conv = Conversation.objects.select_for_update().get(pk=conversation_id)
        if conv.status != Status.HUMAN or conv.assigned_agent_id != agent.pk:
            raise NotAllowed("Take over the conversation before replying.")
        message = Message.objects.create(
            conversation=conv, role=Message.Role.AGENT, text=text[:8000], author=agent
        )
        message_told(message, author_name=agent_name(agent), to_customer=True)
        # Channels that carry the conversation (e-mail) send it from their outbox.
        hooks.emit("message.agent", conversation_id=conv.pk, message=message)
    # The agent's words are part of the context when the bot answers again.
    async_to_sync(memory.forget)(conv.pk)
    return message


def draft_decide(
    *, conversation_id, message_id: int, agent: AbstractBaseUser, send: bool
) -> Message:
    """Send (or discard) a bot answer a channel held as a draft (an inbox in "draft" mode):
    the channel's outbox sends it once this commits."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .select_related("conversation")
            .filter(pk=message_id, conversation_id=conversation_id, role=Message.Role.BOT)
            .first()
        )
        if message is None or (message.metadata or {}).get("draft") != "held":
            raise NotAllowed("This draft was sent or discarded already.")
        name = agent_name(agent)
        message.metadata = {**message.metadata, "draft": "sent" if send else "discarded"}
        message.save(update_fields=["metadata", "updated_at"])
        verb = "sent" if send else "discarded"
        system_note(message.conversation, f"{name} {verb} the bot's draft.")
        hooks.emit(f"draft.{verb}", conversation_id=message.conversation_id, message=message)
    return message


# --- Tickets --------------------------------------------------------------------------------


def ticket_update(
    *,
    ticket_id: int,
    actor: AbstractBaseUser,
    status: str | None = None,
    priority: str | None = None,
    assignee=None,
    unassign: bool = False,
) -> Ticket:
    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket_id)
        if status is not None:
            if status not in Ticket.Status.values:
                raise NotAllowed(f"Unknown status {status!r}.")
            ticket.set_status(status)
        if priority is not None:
            if priority not in Ticket.Priority.values:
                raise NotAllowed(f"Unknown priority {priority!r}.")
            ticket.priority = priority
        if assignee is not None or unassign:
            ticket.assignee = None if unassign else assignee
        ticket.save()
        after_commit(
            (
                group_events.CONSOLE_GROUP,
                group_events.console_ticket(ticket_id=ticket.pk, reason="updated"),
            )
        )
    return ticket


def ticket_create(
    *,
    subject: str,
    actor: AbstractBaseUser,
    conversation_id=None,
    priority: str = Ticket.Priority.NORMAL,
) -> Ticket:
    subject = subject.strip()[:200]
    if not subject:
        raise NotAllowed("A ticket needs a subject.")
    with transaction.atomic():
        ticket = Ticket.objects.create(
            subject=subject, priority=priority, conversation_id=conversation_id, assignee=actor
        )
        after_commit(
            (
                group_events.CONSOLE_GROUP,
                group_events.console_ticket(ticket_id=ticket.pk, reason="created"),
            )
        )
    return ticket


def note_add(*, ticket_id: int, author: AbstractBaseUser, text: str) -> TicketNote:
    """An internal note: staff only, never sent to a customer socket or put into a prompt."""
    text = text.strip()
    if not text:
        raise NotAllowed("The note is empty.")
    with transaction.atomic():
        note = TicketNote.objects.create(ticket_id=ticket_id, author=author, text=text[:8000])
        Ticket.objects.filter(pk=ticket_id).update(updated_at=timezone.now())
        after_commit(
            (
                group_events.CONSOLE_GROUP,
                group_events.console_ticket(ticket_id=ticket_id, reason="note"),
            )
        )
    return note


# --- Canned replies -------------------------------------------------------------------------


def canned_reply_save(
    *, actor: AbstractBaseUser, shortcut: str, title: str, text: str, reply_id: int | None = None
) -> CannedReply:
    values = {
        "shortcut": shortcut.strip().lstrip("/").lower(),
        "title": title.strip(),
        "text": text.strip(),
    }
    if not all(values.values()):
        raise NotAllowed("A canned reply needs a shortcut, a title and a text.")
    if reply_id is None:
        return CannedReply.objects.create(created_by=actor, **values)
    CannedReply.objects.filter(pk=reply_id).update(**values)
    return CannedReply.objects.get(pk=reply_id)


def canned_reply_render(
    *, reply: CannedReply, conversation: Conversation, agent: AbstractBaseUser
) -> str:
    site = selectors.site_of(conversation)
    return fill_template(
        reply.text,
        {
            "customer_name": conversation.customer_name or "there",
            "agent_name": agent_name(agent),
            "site_name": site.name if site else "",
        },
    )
