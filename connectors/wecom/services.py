"""Writes of the WeCom channel: the sync a callback asks for, the cursor, a customer's message
taken in (once per msgid), the reply window, the session's state, what was sent, and the
hand-offs to WeCom's servicers."""

from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from chat import services as chat_services
from chat.handoff import handoff_request
from chat.knowledge.segment import guess_language
from chat.models import Conversation, Inbox
from connectors import selectors as channel_selectors
from connectors.models import Inbound
from connectors.services import SILENT_NOTE, Intake
from connectors.wecom import selectors
from connectors.wecom.client import STATE_ENDED, STATE_SERVICER, STATE_UNTREATED
from connectors.wecom.models import WeComAccount, WeComCustomer, WeComDelivery


def sync_requested(*, inbox_id: int, token: str) -> None:
    """WeCom said there is news (kf_msg_or_event): the connectors process reads it with
    `token`. The newest token wins: any of them reads everything after the cursor."""
    WeComAccount.objects.update_or_create(
        inbox_id=inbox_id,
        defaults={"sync_token": token[:255], "sync_requested_at": timezone.now()},
    )


def sync_done(*, inbox_id: int, token: str) -> None:
    """A sync finished: the token it used is spent (a newer one, come meanwhile, stays)."""
    WeComAccount.objects.update_or_create(inbox_id=inbox_id, defaults={"synced_at": timezone.now()})
    if token:
        WeComAccount.objects.filter(inbox_id=inbox_id, sync_token=token).update(
            sync_token="", sync_requested_at=None
        )


def cursor_store(*, inbox_id: int, cursor: str) -> None:
    """After a page's messages are stored: a restart reads on from here."""
    WeComAccount.objects.update_or_create(inbox_id=inbox_id, defaults={"cursor": cursor[:255]})


def customer_wrote(*, inbox_id: int, external_userid: str, at: datetime) -> None:
    """A customer message sent at `at`: the reply window starts again (an older or replayed
    message changes nothing), and an ended session is a new, untreated one."""
    with transaction.atomic():
        known, _ = WeComCustomer.objects.select_for_update().get_or_create(
            inbox_id=inbox_id, external_userid=external_userid
        )
        if known.last_customer_message_at is None or at > known.last_customer_message_at:
            known.last_customer_message_at, known.sent_since = at, 0
            if known.service_state in (None, STATE_ENDED):
                known.service_state = STATE_UNTREATED
            known.save()


def state_changed(
    *, inbox_id: int, external_userid: str, state: int, servicer_userid: str = ""
) -> None:
    WeComCustomer.objects.update_or_create(
        inbox_id=inbox_id,
        external_userid=external_userid,
        defaults={"service_state": state, "servicer_userid": servicer_userid[:128]},
    )


def piece_sent(*, outbound_id: int, inbox_id: int, external_userid: str) -> None:
    """One more text of an outbox row went out: one more of the window's 5 is used."""
    with transaction.atomic():
        delivery, _ = WeComDelivery.objects.get_or_create(outbound_id=outbound_id)
        WeComDelivery.objects.filter(pk=delivery.pk).update(pieces_sent=F("pieces_sent") + 1)
        _count_sent(inbox_id, external_userid)


def menu_sent(*, inbox_id: int, external_userid: str) -> None:
    with transaction.atomic():
        _count_sent(inbox_id, external_userid)
        WeComCustomer.objects.filter(inbox_id=inbox_id, external_userid=external_userid).update(
            menu_sent=True
        )


def text_sent(*, inbox_id: int, external_userid: str) -> None:
    """A text of the desk's own (not an outbox row's) went out: it counts in the window."""
    _count_sent(inbox_id, external_userid)


def _count_sent(inbox_id: int, external_userid: str) -> None:
    WeComCustomer.objects.filter(inbox_id=inbox_id, external_userid=external_userid).update(
        sent_since=F("sent_since") + 1
    )


def turn_begin(
    *, inbox: Inbox, msgid: str, external_userid: str, text: str, sent_at: datetime
) -> Intake:
    """Record a customer's message once per (inbox, msgid), in the customer's open
    conversation of this inbox, or a new one (in the queue for an agent where the bot is
    silent). `conversation` is None when it was taken before. The reply window is moved
    first: the answer this message starts may be sent before the caller goes on."""
    customer_wrote(inbox_id=inbox.pk, external_userid=external_userid, at=sent_at)
    seen = channel_selectors.inbound_seen(inbox_id=inbox.pk, external_id=msgid)
    if seen is not None:
        if seen.outcome == Inbound.Outcome.TAKING and seen.conversation is not None:
            return Intake(seen, seen.conversation)  # a crash before it was stored: again
        return Intake(None, None, "seen")
    try:
        with transaction.atomic():
            conversation = selectors.open_conversation(
                inbox_id=inbox.pk, external_userid=external_userid
            ) or _conversation_new(inbox, external_userid, text)
            inbound = Inbound.objects.create(
                inbox=inbox,
                external_id=msgid[:255],
                sender=external_userid[:254],
                outcome=Inbound.Outcome.TAKING,
                conversation=conversation,
            )
    except IntegrityError:  # another process took it meanwhile
        return Intake(None, None, "seen")
    if inbox.bot_mode == Inbox.BotMode.SILENT and conversation.status == Conversation.Status.BOT:
        handoff_request(conversation=conversation, note=SILENT_NOTE)
    return Intake(inbound, conversation)


def _conversation_new(inbox: Inbox, external_userid: str, text: str) -> Conversation:
    conversation, _token = chat_services.conversation_start(
        site=inbox.site,
        language=guess_language(text) if text.strip() else inbox.site.language,
        channel=inbox.kind,
        inbox=inbox,
        contact=external_userid,
    )
    return conversation


def note_once(*, inbox: Inbox, msgid: str, external_userid: str, text: str) -> bool:
    """A line in the customer's open conversation for something that happened in WeCom (a
    servicer's message in WeCom's client, a send that failed), written once per msgid."""
    conversation = selectors.open_conversation(inbox_id=inbox.pk, external_userid=external_userid)
    if conversation is None:
        return False
    try:
        with transaction.atomic():
            Inbound.objects.create(
                inbox=inbox,
                external_id=msgid[:255],
                sender=external_userid[:254],
                outcome=Inbound.Outcome.IGNORED,
                reason="noted",
                conversation=conversation,
            )
            chat_services.system_note(conversation, text)
    except IntegrityError:
        return False
    return True


def held_in_wecom(*, inbox: Inbox, external_userid: str, servicer_userid: str) -> None:
    """A servicer took the customer in WeCom's own client: the bot falls silent on the desk
    too (the conversation waits for a human there, noted in the transcript)."""
    state_changed(
        inbox_id=inbox.pk,
        external_userid=external_userid,
        state=STATE_SERVICER,
        servicer_userid=servicer_userid,
    )
    conversation = selectors.open_conversation(inbox_id=inbox.pk, external_userid=external_userid)
    if conversation is not None and conversation.status == Conversation.Status.BOT:
        who = servicer_userid or "a servicer"
        handoff_request(
            conversation=conversation,
            note=f"WeCom servicer {who} took this customer in WeCom's client: the bot is silent.",
        )


def ended_in_wecom(*, inbox: Inbox, external_userid: str) -> None:
    """WeCom's session ended (a servicer closed it, or it timed out there). A conversation
    the desk left to WeCom (waiting while a servicer held it there) ends with it, so the
    customer's next message starts afresh with the bot; one a desk agent holds stays."""
    with transaction.atomic():
        known = (
            WeComCustomer.objects.select_for_update()
            .filter(inbox_id=inbox.pk, external_userid=external_userid)
            .first()
        )
        held_there = known is not None and known.service_state == STATE_SERVICER
        state_changed(inbox_id=inbox.pk, external_userid=external_userid, state=STATE_ENDED)
        conversation = selectors.open_conversation(
            inbox_id=inbox.pk, external_userid=external_userid
        )
        if held_there and conversation and conversation.status == Conversation.Status.WAITING:
            chat_services.conversation_close(
                conversation=conversation, closed_by="The WeCom servicer"
            )


def handover_wanted(*, conversation_id) -> None:
    """A hand-off on the desk in an inbox whose hand-offs go to WeCom's servicers: leave it
    for the connectors process (in the hand-off's transaction; no network here)."""
    conversation = Conversation.objects.filter(pk=conversation_id).select_related("inbox").first()
    if conversation is None or conversation.inbox is None or not conversation.contact:
        return
    WeComCustomer.objects.update_or_create(
        inbox_id=conversation.inbox_id,
        external_userid=conversation.contact,
        defaults={"handover_pending": True},
    )
    WeComAccount.objects.update_or_create(
        inbox_id=conversation.inbox_id, defaults={"handovers_pending": True}
    )


def handover_done(*, inbox_id: int, external_userid: str, servicer_userid: str, note: str) -> None:
    with transaction.atomic():
        WeComCustomer.objects.filter(inbox_id=inbox_id, external_userid=external_userid).update(
            handover_pending=False,
            service_state=STATE_SERVICER,
            servicer_userid=servicer_userid[:128],
        )
        conversation = selectors.open_conversation(
            inbox_id=inbox_id, external_userid=external_userid
        )
        if conversation is not None:
            chat_services.system_note(conversation, note)


def handovers_checked(*, inbox_id: int) -> None:
    """Every pending hand-off of the account was tried: the flag goes when none is left."""
    if not WeComCustomer.objects.filter(inbox_id=inbox_id, handover_pending=True).exists():
        WeComAccount.objects.filter(inbox_id=inbox_id).update(handovers_pending=False)


def refusal_noted(*, conversation_id, text: str) -> None:
    """Staff see in the transcript that a message did not reach the customer, and why."""
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is not None:
        chat_services.system_note(conversation, text)
