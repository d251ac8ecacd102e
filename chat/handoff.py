"""Who answers a conversation, as the customer side asks for it: a customer asking for a human
(`handoff_request`) or leaving an e-mail address when nobody can answer live
(`contact_submit`), and what staff's takeover, hand-back and close (agents.services) share
with them: the system line in the transcript, the status events, an agent's name as shown.

Tickets and console presence belong to the staff side, and chat never imports agents (imports
run agents → chat → inference_worker). So agents connects a `StaffSide` at start-up
(AgentsConfig.ready), and the hand-off calls it inside its own transaction: the ticket opens,
or the contact is noted on it, in the same commit as the hand-off, exactly as if it were
written here.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from chat import group_events, hooks, hours, metrics, selectors
from chat.models import Conversation
from chat.services import ConversationClosed, status_changed, system_note
from runtime.broadcast import after_commit

Status = Conversation.Status


@dataclass(frozen=True)
class HandoffOutcome:
    agents_available: bool
    business_hours: dict


@dataclass(frozen=True)
class StaffSide:
    """What the staff side does for a customer's hand-off. The ticket hooks run inside the
    hand-off's transaction and send their console events after it commits."""

    # The conversation's unsolved ticket, opened if there is none: its subject.
    open_ticket: Callable[[Conversation], str]
    # Note on that ticket (opened if need be) the e-mail address to follow up by.
    leave_contact: Callable[[Conversation, str], None]
    # Whether any agent has a console open now.
    agents_online: Callable[[], bool]


_staff: StaffSide | None = None


def connect_staff_side(staff: StaffSide) -> None:
    global _staff
    _staff = staff


def _staff_side() -> StaffSide:
    if _staff is None:
        # Without it a customer's hand-off would open no ticket and nobody would hear of it.
        raise RuntimeError("No staff side is connected: 'agents' must be in INSTALLED_APPS.")
    return _staff


def agent_name(user: AbstractBaseUser | None) -> str:
    if user is None:
        return ""
    return user.get_full_name() or user.get_username()


def handoff_request(
    *, conversation: Conversation, note: str = "The customer asked for a human agent."
) -> HandoffOutcome:
    """The customer asked for a human: the bot falls silent, a ticket opens, agents hear it.
    `note`: what the transcript says happened (a channel where the bot never answers puts
    every conversation in the queue this way). Raises ConversationClosed."""
    staff = _staff_side()
    now = timezone.now()
    with transaction.atomic():
        conv = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if conv.status == Status.CLOSED:
            raise ConversationClosed("The conversation is closed.")
        moved = conv.status == Status.BOT
        first = conv.handoff_requested_at is None
        if moved:
            conv.status = Status.WAITING
        if first:
            conv.handoff_requested_at = now
        conv.save(update_fields=["status", "handoff_requested_at", "updated_at"])
        if first:
            system_note(conv, note)
        subject = staff.open_ticket(conv)
        if moved or first:  # a new hand-off, not the same request clicked again
            hooks.emit("handoff.requested", conversation_id=conv.pk, subject=subject)
        if moved:
            status_changed(conv, Status.WAITING)
            after_commit(
                (
                    group_events.CONSOLE_GROUP,
                    group_events.console_handoff(conversation_id=str(conv.pk), subject=subject),
                )
            )
    conversation.status, conversation.handoff_requested_at = conv.status, conv.handoff_requested_at
    site = selectors.site_of(conv)
    business_hours = site.business_hours if site else {}
    available = staff.agents_online() and hours.is_open(business_hours, now)
    if moved or first:  # a new hand-off, not the same request clicked again
        metrics.handoff(agents_available=available)
    return HandoffOutcome(agents_available=available, business_hours=business_hours)


def contact_submit(*, conversation: Conversation, email: str, name: str = "") -> None:
    """The customer's e-mail for a follow-up when nobody could answer live. A verified
    customer's name and e-mail address are the ones the company vouched for: what was typed
    here goes on the ticket only, never over them."""
    staff = _staff_side()
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk, customer_id="").update(
            customer_email=email, customer_name=name or conversation.customer_name
        )
        staff.leave_contact(conversation, email)
