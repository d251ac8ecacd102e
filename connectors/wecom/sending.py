"""Sending one outbox row of a WeCom inbox (the bot's answer, an agent's reply) with
kf/send_msg: checked against the customer's reply window first, cut into texts of 2048 bytes,
each with a msgid made from the row's id and the piece's number, so WeCom takes each once.

A reply the window does not allow (WeCom's 48 hours and 5 messages, or a session a servicer
holds) fails at once and for good, with the reason in the row and in the transcript: trying
again could never succeed until the customer writes. WeCom being busy or out of reach is
tried again with the outbox's backoff."""

import logging

from django.utils import timezone

from chat.models import Message
from connectors.sending import Outgoing, SendFailed
from connectors.wecom import account, selectors, services
from connectors.wecom.client import Menu, MenuClick, WeComAPIError, WeComUnavailable
from connectors.wecom.texts import split_text
from connectors.wecom.window import Refusal, Verdict
from runtime.aio import db

log = logging.getLogger("connectors")
MENU = {
    "zh": Menu(
        head="需要人工客服吗？", items=[MenuClick(id=account.HUMAN_MENU_ID, content="转人工")]
    ),
    "en": Menu(
        head="Would you rather talk to a person?",
        items=[MenuClick(id=account.HUMAN_MENU_ID, content="Talk to a person")],
    ),
}
WHY = {
    Refusal.NO_CUSTOMER_MESSAGE: "the customer has not written on WeChat yet",
    Refusal.WINDOW_CLOSED: "the customer last wrote more than 48 hours ago",
    Refusal.QUOTA_USED: "5 messages already went since the customer last wrote",
    Refusal.NOT_WITH_BOT: (
        "a servicer holds the session in WeCom's client, or it is queued or ended"
    ),
}


class ReplyRefused(SendFailed):
    """WeCom's reply rules forbid this message now: the row fails for good (`final`)."""

    final = True


def refusal_text(verdict: Verdict, *, pieces: int = 1) -> str:
    if verdict.allowed:
        why = f"it needs {pieces} WeChat messages and only {verdict.remaining} of 5 are left"
    else:
        why = WHY[verdict.refusal]
    return (
        f"Not sent through WeCom: {why}. WeCom allows up to 5 messages within 48 hours of the "
        "customer's last message; the desk can write again once the customer does."
    )


def msgid(row_pk: int, piece: int) -> str:
    return f"desk{row_pk}p{piece}"


async def send(row: Outgoing, within: float) -> str:
    """Send within `within` seconds (each call); returns the msgid of the first piece;
    raises SendFailed (ReplyRefused: for good)."""
    inbox, contact = row.inbox, row.conversation.contact
    open_kfid = inbox.settings["open_kfid"]
    client = account.client_for(inbox, timeout=within)
    pieces = split_text(row.message.text.strip())
    done = await db(selectors.pieces_sent)(outbound_id=row.pk)
    window, state = await db(selectors.reply_window)(inbox_id=inbox.pk, external_userid=contact)
    verdict = window.verdict(now=timezone.now(), service_state=state)
    todo = len(pieces) - done
    if todo > 0 and (not verdict.allowed or verdict.remaining < todo):
        await _refuse(row, refusal_text(verdict, pieces=todo))
    for number in range(done, len(pieces)):
        try:
            await client.send_text(
                open_kfid=open_kfid,
                external_userid=contact,
                content=pieces[number],
                msgid=msgid(row.pk, number),
            )
        except WeComAPIError as exc:
            if exc.reply_refused:
                await _refuse(row, f"Not sent through WeCom: WeCom refused it ({exc.errmsg}).")
            raise SendFailed(str(exc)) from None
        except WeComUnavailable as exc:
            raise SendFailed(str(exc)) from None
        await db(services.piece_sent)(
            outbound_id=row.pk, inbox_id=inbox.pk, external_userid=contact
        )
    if row.message.role == Message.Role.BOT and verdict.remaining > todo:
        await _offer_a_person(row, client, open_kfid)
    return msgid(row.pk, 0)


async def _refuse(row: Outgoing, text: str) -> None:
    await db(services.refusal_noted)(conversation_id=row.conversation.pk, text=text)
    raise ReplyRefused(text)


async def _offer_a_person(row: Outgoing, client, open_kfid: str) -> None:
    """The "talk to a person" menu goes once to each customer, after the bot's first answer;
    it is a courtesy: a failure is logged, never the answer's."""
    inbox, contact = row.inbox, row.conversation.contact
    if not await db(selectors.menu_due)(inbox_id=inbox.pk, external_userid=contact):
        return
    menu = MENU.get(row.conversation.language, MENU["zh"])
    try:
        await client.send_menu(
            open_kfid=open_kfid, external_userid=contact, menu=menu, msgid=f"desk{row.pk}m"
        )
    except (WeComAPIError, WeComUnavailable) as exc:
        log.warning("inbox %s: the menu did not go: %s", inbox.pk, exc)
        return
    await db(services.menu_sent)(inbox_id=inbox.pk, external_userid=contact)
