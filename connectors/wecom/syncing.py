"""Reading WeCom accounts in the connectors process: each enabled WeCom inbox with news
(a callback stored a sync request), a hand-off to carry out, or no read for SAFETY_NET_SECONDS
(a callback WeCom gave up on) is read with sync_msg from its stored cursor.

Every item is taken once: a customer's message is keyed by its msgid (connectors.Inbound)
and its client_id, so a page read again after a restart adds nothing; the cursor is stored
after each page's messages. A customer's text goes through chat.turns as the widget's does
(the same answer path, guards, knowledge, actions, fallback and hand-off); the answer is
stored by the answer run and its `message.bot` event queues it in the outbox."""

import asyncio
import hashlib
import logging
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError
from django.utils import timezone

from chat import services as chat_services
from chat.env_secrets import MissingVariable
from chat.handoff import handoff_request
from chat.models import Conversation, Inbox
from connectors import turns as channel_turns
from connectors.wecom import account, handover, selectors, services
from connectors.wecom.client import WeComAPIError, WeComError
from connectors.wecom.messages import (
    CHANGE_ENDED,
    CustomerTurn,
    SendFailed,
    ServicerMessage,
    SessionChanged,
    to_desk,
)
from runtime.aio import db

log = logging.getLogger("connectors")
SAFETY_NET_SECONDS = 60.0
# After a failed read, the account waits this long before the next (doubling to the most).
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
# sync_msg's answer to a callback token that is no longer good (older than 10 minutes).
TOKEN_SPENT = 95007
# sync_msg's first read returns the account's last 3 days; what was written before the inbox
# was connected (less this margin, for clocks apart) is history, not for the bot to answer.
HISTORY_MARGIN_SECONDS = 60


def client_id(msgid: str) -> str:
    """The customer message's client_id: stored once per conversation, whoever reads it."""
    return "wecom." + hashlib.sha256(msgid.encode()).hexdigest()[:48]


class WeComSync:
    """Called on each turn of the connectors loop; reads run as tasks, one per account."""

    def __init__(self, *, answers: set[asyncio.Task], timeout: float) -> None:
        self.answers = answers
        self.timeout = timeout
        self.reading: dict[int, asyncio.Task] = {}
        # inbox id → (failed reads in a row, loop time before which it is not read again)
        self.failing: dict[int, tuple[int, float]] = {}
        self._broken: set[tuple] = set()

    async def tick(self) -> None:
        stale = timezone.now() - timedelta(seconds=SAFETY_NET_SECONDS)
        try:
            due = await db(selectors.accounts_due)(stale_before=stale)
        except DatabaseError:
            log.exception("could not read the WeCom accounts")
            return
        now = asyncio.get_running_loop().time()
        for inbox, wecom in due:
            if inbox.pk not in self.reading and self.failing.get(inbox.pk, (0, 0.0))[1] <= now:
                task = asyncio.create_task(self._read(inbox, wecom.sync_token))
                self.reading[inbox.pk] = task
                task.add_done_callback(lambda _t, pk=inbox.pk: self.reading.pop(pk, None))

    async def stop(self) -> None:
        """Reads under way finish their page (each item is stored whole or not at all)."""
        if self.reading:
            await asyncio.gather(*self.reading.values(), return_exceptions=True)
        await account.close_clients()

    async def _read(self, inbox: Inbox, token: str) -> None:
        try:
            client = account.client_for(inbox, timeout=self.timeout)
            await sync_account(inbox, client, token=token, answers=self.answers)
            await handover.carry_out(inbox, client)
        except MissingVariable as exc:
            key = (inbox.pk, exc.name)
            if key not in self._broken:  # said once
                self._broken.add(key)
                log.error("WeCom inbox %s: the variable %s is not set", inbox.pk, exc.name)
            self._failed(inbox.pk)
        except (WeComError, DatabaseError) as exc:
            log.warning("WeCom inbox %s could not be read: %s", inbox.pk, exc)
            self._failed(inbox.pk)
        except Exception:
            log.exception("WeCom inbox %s: reading failed", inbox.pk)
            self._failed(inbox.pk)
        else:
            self.failing.pop(inbox.pk, None)

    def _failed(self, inbox_id: int) -> None:
        tries = self.failing.get(inbox_id, (0, 0.0))[0] + 1
        wait = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (tries - 1))
        self.failing[inbox_id] = (tries, asyncio.get_running_loop().time() + wait)


async def sync_account(inbox: Inbox, client, *, token: str, answers: set[asyncio.Task]) -> None:
    """Read the account from its stored cursor to the end, taking each item in."""
    cursor = await db(selectors.cursor)(inbox_id=inbox.pk)
    try:
        await _pages(inbox, client, cursor=cursor, token=token, answers=answers)
    except WeComAPIError as exc:
        if exc.errcode != TOKEN_SPENT or not token:
            raise
        # The callback's token expired before the read (the process was down): read without.
        cursor = await db(selectors.cursor)(inbox_id=inbox.pk)
        await _pages(inbox, client, cursor=cursor, token="", answers=answers)
    await db(services.sync_done)(inbox_id=inbox.pk, token=token)


async def _pages(inbox: Inbox, client, *, cursor: str, token: str, answers) -> None:
    open_kfid = inbox.settings["open_kfid"]
    connected = inbox.created.timestamp() - HISTORY_MARGIN_SECONDS
    async for page in client.sync_pages(cursor=cursor, token=token, open_kfid=open_kfid):
        for message in page.messages:
            if message.open_kfid and message.open_kfid != open_kfid:
                continue  # another account of the corp: its own inbox reads it
            if message.send_time and message.send_time < connected:
                continue
            await take(inbox, to_desk(message), answers)
        await db(services.cursor_store)(inbox_id=inbox.pk, cursor=page.next_cursor)


async def take(inbox: Inbox, item, answers: set[asyncio.Task]) -> str:
    """One sync_msg item, taken in; what became of it."""
    if isinstance(item, CustomerTurn):
        return await _customer_turn(inbox, item, answers)
    if isinstance(item, ServicerMessage):
        who = item.servicer_userid or "a servicer"
        await db(services.note_once)(
            inbox=inbox,
            msgid=item.msgid,
            external_userid=item.external_userid,
            text=f"WeCom servicer {who} wrote in WeCom's client: {item.text}",
        )
        return "noted"
    if isinstance(item, SessionChanged):
        if item.change_type == CHANGE_ENDED:
            await db(services.ended_in_wecom)(inbox=inbox, external_userid=item.external_userid)
        else:  # taken from the queue, handed to another servicer, reopened by one
            await db(services.held_in_wecom)(
                inbox=inbox,
                external_userid=item.external_userid,
                servicer_userid=item.new_servicer_userid,
            )
        return "session"
    if isinstance(item, SendFailed):
        log.warning(
            "WeCom inbox %s: message %s did not reach the customer", inbox.pk, item.fail_msgid
        )
        return "send failed"
    return "ignored"


async def _customer_turn(inbox: Inbox, item: CustomerTurn, answers: set[asyncio.Task]) -> str:
    sent_at = datetime.fromtimestamp(item.send_time, UTC) if item.send_time else timezone.now()
    intake = await db(services.turn_begin)(
        inbox=inbox,
        msgid=item.msgid,
        external_userid=item.external_userid,
        text=item.text,
        sent_at=sent_at,
    )
    if intake.conversation is None:
        return intake.reason
    conversation = intake.conversation
    if item.menu_id == account.HUMAN_MENU_ID and conversation.status == Conversation.Status.BOT:
        # "Talk to a person" clicked: a hand-off, before the bot could answer the click.
        try:
            await db(handoff_request)(conversation=conversation)
        except chat_services.ConversationClosed:
            pass
    metadata = {"wecom": {"msgid": item.msgid, "msgtype": item.msgtype, "menu_id": item.menu_id}}
    return await channel_turns.say(
        intake,
        text=item.text,
        client_id=client_id(item.msgid),
        metadata=metadata,
        answers=answers,
    )
