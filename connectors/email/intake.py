"""One e-mail that arrived, taken into the desk: ignored (an auto-reply, a bounce, our own
mail), or stored as the customer's message of its conversation through chat.turns, the entry
of every channel, so the bot answers it (or an agent does) as it would on the widget. The
bot's answer is stored by the answer run; its `message.bot` event queues the e-mail."""

import asyncio
import hashlib
import logging
from dataclasses import asdict

from chat import services as chat_services
from chat import turns
from chat.api.listening import AnswerListener
from chat.models import Inbox
from connectors import services
from connectors.email import automatic, parsing
from runtime.aio import db

log = logging.getLogger("connectors")
ATTACHMENTS_ONLY = "(Sent attachments only.)"


def client_id(message_id: str) -> str:
    """The customer message's client_id: a mail stored once per conversation, whoever reads it."""
    return "mail." + hashlib.sha256(message_id.encode()).hexdigest()[:48]


async def take(inbox: Inbox, raw: bytes, answers: set[asyncio.Task]) -> str:
    """Take one mail in; what became of it ("taken", "seen", or why it was ignored). The
    answer, if the bot gives one, runs on as a task added to `answers`."""
    mail = parsing.parse(raw)
    reason = automatic.reason_to_ignore(mail, own_address=inbox.settings.get("address", ""))
    intake = await db(services.inbound_begin)(
        inbox=inbox,
        external_id=mail.message_id,
        contact=mail.sender,
        contact_name=mail.sender_name,
        subject=mail.subject,
        thread_ids=mail.thread_ids,
        text=mail.text,
        ignore_reason=reason,
    )
    if intake.conversation is None:
        if intake.reason != "seen":
            log.info("ignored mail %s to inbox %s: %s", mail.message_id, inbox.pk, intake.reason)
        return intake.reason
    metadata = {
        "email": {
            "message_id": mail.message_id,
            "subject": mail.subject,
            "attachments": [asdict(a) for a in mail.attachments],
        }
    }
    listener = await AnswerListener(intake.conversation).open()
    try:
        turn = await turns.customer_says(
            conversation=intake.conversation,
            text=mail.text or ATTACHMENTS_ONLY,
            client_id=client_id(mail.message_id),
            channel_name=listener.channel_name,
            metadata=metadata,
        )
    except chat_services.ConversationClosed:
        await listener.close()
        await db(services.inbound_refused)(inbound_id=intake.inbound.pk, reason="closed")
        return "closed"
    except BaseException:
        await listener.close()
        raise
    await db(services.inbound_taken)(inbound_id=intake.inbound.pk, message_id=turn.message.pk)
    if turn.outcome == turns.Outcome.ANSWERING:
        task = asyncio.create_task(_hear_answer(listener, turn.message.pk))
        answers.add(task)
        task.add_done_callback(answers.discard)
    else:
        await listener.close()
    return "taken"


async def _hear_answer(listener: AnswerListener, question_id: int) -> None:
    """Stay in the answer's audience until it ends, as an API request does: a run with no
    one listening would stop early. What it says is stored by the run itself."""
    try:
        async for _frame in listener.answer(question_id):
            pass
    finally:
        await listener.close()
