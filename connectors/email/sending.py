"""Sending one outbox row of an e-mail inbox: composed in the customer's thread, through the
inbox's SMTP server (blocking smtplib, in a thread)."""

import asyncio
import smtplib

from chat.models import Message
from connectors import kinds
from connectors.email import composing, servers, smtp
from connectors.sending import Outgoing, SendFailed


async def send(row: Outgoing, within: float) -> str:
    """Send within `within` seconds; returns the Message-ID sent (the row's); raises
    SendFailed."""
    try:
        server = servers.smtp(kinds.resolved(row.inbox)["smtp_url"])
    except servers.BadServerURL as exc:
        raise SendFailed(f"smtp_url: {exc}") from None
    mail = composing.compose(
        composing.Outgoing(
            message_id=row.external_id,
            from_address=row.inbox.settings["address"],
            from_name=row.inbox.site.name,
            to_address=row.conversation.contact,
            subject=row.thread.subject,
            in_reply_to=row.thread.in_reply_to,
            references=row.thread.references,
            text=row.message.text,
            automatic=row.message.role == Message.Role.BOT,
        )
    )
    try:
        await asyncio.wait_for(asyncio.to_thread(smtp.send, server, mail, timeout=within), within)
    except TimeoutError:
        raise SendFailed(f"no answer within {within:g} s") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}"[:500]) from None
    return row.external_id
