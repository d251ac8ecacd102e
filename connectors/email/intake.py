"""One e-mail that arrived, taken into the desk: ignored (an auto-reply, a bounce, our own
mail), or stored as the customer's message of its conversation through chat.turns, the entry
of every channel (connectors/turns.py), so the bot answers it (or an agent does) as it would
on the widget. The bot's answer is stored by the answer run; its `message.bot` event queues
the e-mail."""

import asyncio
import hashlib
import logging
from dataclasses import asdict

from chat.models import Inbox
from connectors import services
from connectors import turns as channel_turns
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
    return await channel_turns.say(
        intake,
        text=mail.text or ATTACHMENTS_ONLY,
        client_id=client_id(mail.message_id),
        metadata=metadata,
        answers=answers,
    )
