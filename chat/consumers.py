"""The customer's WebSocket, /ws/chat/: thin — parse, authorise, call a service, send.

Every frame it sends is built in `chat.frames`, every group event it hears in
`chat.group_events`; both are documented in docs/protocol.md.
"""

import asyncio
import contextlib
import json
import logging
import time

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from chat import (
    answering,
    customers,
    drafts,
    frames,
    group_events,
    handoff,
    hours,
    limits,
    metrics,
    selectors,
    services,
    turns,
)
from chat.models import Conversation, Message
from chat.protocol import (
    NOT_A_BOT_ANSWER,
    FrameError,
    client_id_of,
    connect_params,
    parse_client_frame,
)
from runtime.aio import db
from runtime.client_ip import client_ip

log = logging.getLogger(__name__)

TYPING_EVERY_SECONDS = 2.0  # customer typing reaches agents at most this often
CLOSED_MESSAGE = "This conversation is closed. Start a new one to write again."
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


# Private close codes, like 4403 and 4404 above: Daphne (autobahn) lets an application close
# only with 1000 or 3000-4999, so the standard 1012 and 1013 are not available here.
CLOSE_SERVICE_RESTART = 4503  # Redis lost: the widget reconnects with backoff
CLOSE_TRY_AGAIN_LATER = 4429  # refused by a limit: the widget reconnects with backoff


class ChatConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    group = ""
    typing_sent_at = 0.0
    closed_told = False
    resume_watch: asyncio.Task | None = None  # see answering.watch_resumed

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            # Daphne is stopping (SIGTERM): it cancels every connection and waits. Keep what
            # the answers of this process streamed so far before the process goes.
            await answering.persist_all()
            raise
        except (RedisError, OSError) as exc:
            # The channel layer lost Redis: this socket can no longer hear its conversation.
            # Say so and close with "service restart"; the widget reconnects with backoff.
            log.warning("customer socket closed: Redis unavailable (%s)", exc.__class__.__name__)
            answering.unregister_socket(self.channel_name)
            metrics.socket_closed(metrics.CUSTOMER, self)
            with contextlib.suppress(Exception):
                await send(
                    {
                        "type": "websocket.send",
                        "text": json.dumps(
                            frames.error_frame(
                                code=frames.ErrorCode.UNAVAILABLE,
                                message="The chat service is restarting; reconnecting…",
                            )
                        ),
                    }
                )
                await send({"type": "websocket.close", "code": CLOSE_SERVICE_RESTART})

    async def connect(self) -> None:
        await self.accept()
        metrics.socket_opened(metrics.CUSTOMER, self)
        params = connect_params(self.scope)
        self.client_ip = client_ip(self.scope)
        site = None
        if not params.site_key and not settings.DEMO_PAGE:
            # A key-less socket is the demo page's: with the page off, it would lend the
            # model to anyone who can reach the desk.
            await self._refuse(
                frames.ErrorCode.ORIGIN_NOT_ALLOWED,
                "This desk takes chats from its widget only: connect with the "
                "site key of the embed script (?site=KEY). The key-less demo "
                "chat is off (DEMO_PAGE).",
                CLOSE_FORBIDDEN,
            )
            return
        if params.site_key:
            # Widget sockets come from company pages on other origins: the site key must
            # exist and allow the page's origin (same-host pages are checked in cs_site.asgi).
            site = await db(selectors.site_for_origin)(
                site_key=params.site_key, origin=params.origin
            )
            if site is None:
                await self._refuse(
                    frames.ErrorCode.ORIGIN_NOT_ALLOWED,
                    "This site key is unknown or does not allow this page's "
                    "origin. Add the origin to the site in admin.",
                    CLOSE_FORBIDDEN,
                )
                return
        if params.conversation_id or params.token:
            conversation = await db(selectors.conversation_for_customer)(
                conversation_id=params.conversation_id, token=params.token
            ) or await drafts.find(conversation_id=params.conversation_id, token=params.token)
            if conversation is None or conversation.site_id != (site.pk if site else None):
                await self._refuse(
                    frames.ErrorCode.NOT_FOUND,
                    "No conversation matches this id and token. "
                    "Connect without them to start a new conversation.",
                    CLOSE_NOT_FOUND,
                )
                return
            self.conversation = conversation
            # Before the resume, which may start an answer: that answer knows the customer.
            verdict = await self._verify_customer(params.customer_token)
            if verdict is not None and verdict.get("code") == frames.ErrorCode.CUSTOMER_MISMATCH:
                # Another customer signed in on this browser: they get neither this history
                # nor this conversation, but a new one of their own (the widget starts it).
                self.conversation = None
                await self._refuse(
                    frames.ErrorCode.CUSTOMER_MISMATCH,
                    "This conversation is another customer's. Connect without its id and "
                    "token to start a new conversation for this customer.",
                    CLOSE_NOT_FOUND,
                )
                return
            await self._join()
            await self._send_resume()
            if verdict is not None:
                await self.send_frame(verdict)
        else:
            refusal = await limits.check_new_conversation(
                ip=self.client_ip, site_key=site.key if site else ""
            )
            if refusal is not None:
                await self._refuse(
                    frames.ErrorCode.RATE_LIMITED,
                    refusal.message,
                    CLOSE_TRY_AGAIN_LATER,
                    retry_after=refusal.retry_after,
                )
                return
            # No database row yet, and nothing for the console: most page views never say
            # a word. The first frame that needs the row makes it (_stored).
            self.conversation, token = services.conversation_prepare(
                site=site,
                language=params.language or (site.language if site else ""),
                region=params.region,
                timezone_name=params.timezone,
                page_url=params.page_url,
                user_agent=params.user_agent,
            )
            await drafts.keep(self.conversation)
            verdict = await self._verify_customer(params.customer_token)
            await self._join()
            await self.send_frame(
                frames.conversation_frame(
                    conversation_id=str(self.conversation.id),
                    token=token,
                    status=self.conversation.status,
                    resumed=False,
                )
            )
            if verdict is not None:
                await self.send_frame(verdict)

    async def _verify_customer(self, token: str) -> dict | None:
        """Check a customer token and mark the conversation as that customer's; the frame
        that says how it went (`customer.verified`, or an error saying what to do), None
        without a token. A refused token changes nothing: the conversation goes on as it was,
        unverified (or verified as before), and the socket stays open."""
        if not token:
            return None
        try:
            self.conversation = await db(services.customer_token_accept)(
                conversation=self.conversation, token=token
            )
        except customers.CustomerTokenError as exc:
            expired = exc.code == customers.CustomerTokenError.EXPIRED
            code = (
                frames.ErrorCode.CUSTOMER_TOKEN_EXPIRED
                if expired
                else frames.ErrorCode.CUSTOMER_TOKEN_INVALID
            )
            return frames.error_frame(code=code, message=exc.message)
        except services.CustomerMismatch as exc:
            return frames.error_frame(code=frames.ErrorCode.CUSTOMER_MISMATCH, message=str(exc))
        except DatabaseError:
            log.warning(
                "customer token of %s not checked: database unavailable", self.conversation.id
            )
            return frames.error_frame(
                code=frames.ErrorCode.UNAVAILABLE,
                message="The customer token could not be checked right now; send it again "
                "in a moment.",
            )
        if self.conversation._state.adding:
            await drafts.keep(self.conversation)  # a reload or another tab resumes it verified
        return frames.customer_verified_frame(
            customer_id=self.conversation.customer_id,
            expires_at=self.conversation.customer_verified_until.isoformat(),
        )

    async def _stored(self) -> Conversation:
        """The conversation's database row, made now if this is its first frame that needs
        one (another tab of the visitor may have made it: then that one)."""
        if self.conversation._state.adding:
            self.conversation, _ = await db(services.conversation_open)(
                conversation=self.conversation
            )
            await drafts.forget(self.conversation.pk)
        return self.conversation

    async def _join(self) -> None:
        """Hear what agents do in this conversation (takeover, replies, typing) and see its
        answers, whichever socket or process asked for them."""
        answering.register_socket(self.channel_name, self)
        self.group = group_events.conversation_group(self.conversation.id)
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def _refuse(
        self, code: str, message: str, close_code: int, retry_after: int | None = None
    ) -> None:
        await self.send_frame(
            frames.error_frame(code=code, message=message, retry_after=retry_after)
        )
        await self.close(code=close_code)

    async def _send_resume(self) -> None:
        conversation = self.conversation
        await self.send_frame(
            frames.conversation_frame(
                conversation_id=str(conversation.id),
                token=None,
                status=conversation.status,
                resumed=True,
            )
        )
        if conversation._state.adding:  # not stored yet: nothing said, nothing streaming
            await self.send_frame(frames.history_frame(messages=[]))
            return
        # The claim first, then the history: the history is at least as new as the claim.
        live = await answering.live_answer(conversation.id)
        history = await db(selectors.conversation_history)(conversation_id=conversation.id)
        # An answer still streaming (another tab asked, or this one before a reload) is not
        # history yet: its run sends the text so far, then the rest. One that has ended (its
        # row has a finish reason) is history.
        streaming = live["message_id"] if live else None
        left_out = next((m.id for m in history if m.id == streaming and not m.finish_reason), None)
        await self.send_frame(
            frames.history_frame(
                messages=[
                    _history_item(m, conversation.language) for m in history if m.id != left_out
                ]
            )
        )
        if live is not None:
            await answering.join(
                conversation.id,
                self.channel_name,
                answering.CUSTOMER,
                claim=live,
                left_out=left_out,
            )
            # The run may be in a process that died: then this socket takes the question over.
            self.resume_watch = answering.watch_resumed(conversation, live, self.channel_name)
            return
        # A question whose answer was lost with the last connection is answered now.
        question = await db(selectors.unanswered_question)(conversation_id=conversation.id)
        if question is not None and conversation.status == Conversation.Status.BOT:
            await answering.request_answer(
                conversation=conversation, question=question, channel_name=self.channel_name
            )

    async def disconnect(self, code: int) -> None:
        if self.resume_watch is not None:
            self.resume_watch.cancel()
        metrics.socket_closed(metrics.CUSTOMER, self)
        answering.unregister_socket(self.channel_name)
        if self.conversation is not None:
            with contextlib.suppress(RedisError, OSError):
                await answering.leave(self.conversation.id, self.channel_name)
        if self.group:
            with contextlib.suppress(RedisError, OSError):
                await self.channel_layer.group_discard(self.group, self.channel_name)

    # --- customer frames -----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return
        cfg = settings.CHAT
        frame, refusal = None, None
        try:
            frame = parse_client_frame(
                text_data,
                bytes_data,
                max_bytes=cfg["MAX_FRAME_BYTES"],
                max_chars=cfg["MAX_MESSAGE_CHARS"],
            )
        except FrameError as exc:
            refusal = exc
        # Every frame counts against the flood limit, bad ones too, except typing signals
        # (frequent by nature, throttled in _on_typing instead) and pings (the widget's
        # heartbeat, which every open tab sends).
        retry_after = None
        if frame is None or frame["type"] not in ("typing", "ping"):
            limited = await limits.check_frame(
                socket_id=self.channel_name, conversation_id=str(self.conversation.id)
            )
            if limited is None and frame is not None and frame["type"] == "message":
                limited = await limits.check_message(ip=self.client_ip)
            if limited is not None:
                refusal = FrameError(limited.code, limited.message)
                retry_after = limited.retry_after
        if refusal is not None:
            await self.send_frame(
                frames.error_frame(
                    code=refusal.code,
                    message=refusal.message,
                    retry_after=retry_after,
                    client_id=client_id_of(text_data, max_bytes=settings.CHAT["MAX_FRAME_BYTES"]),
                )
            )
            return
        # The type is one of chat.frames.CLIENT_FRAME_TYPES (parse_client_frame checked it),
        # and each has its handler (tests/answers/test_protocol.py checks that).
        handler = getattr(self, frame_handler_name(frame["type"]))
        try:
            await handler(frame)
        except (DatabaseError, RedisError, OSError):
            log.warning(
                "%s frame of %s failed: storage unavailable",
                frame["type"],
                self.conversation.id,
                exc_info=True,
            )
            await self.send_frame(
                frames.error_frame(
                    code=frames.ErrorCode.UNAVAILABLE,
                    message="That could not be saved. Please try again in a moment.",
                )
            )
        except Exception:
            # A bug, not the customer's fault: keep the socket, say so, log it once.
            log.exception("%s frame of %s failed", frame["type"], self.conversation.id)
            await self.send_frame(
                frames.error_frame(
                    code=frames.ErrorCode.INTERNAL,
                    message="Something went wrong on our side. Please try again.",
                    client_id=frame.get("client_id"),
                )
            )

    async def _on_ping(self, frame: dict) -> None:
        # Group memberships live in Redis: after a Redis restart they are gone while the socket
        # stays open. The heartbeat renews them, so such a socket hears agents again within one
        # beat (the widget pings every 25 s).
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_frame(frames.pong_frame())

    async def _on_feedback(self, frame: frames.FeedbackFrame) -> None:
        try:
            await db(services.feedback_submit)(
                conversation=self.conversation,
                message_id=frame["message_id"],
                rating=frame["rating"],
                comment=frame.get("comment", ""),
            )
        except Message.DoesNotExist:
            await self.send_frame(
                frames.error_frame(code=frames.ErrorCode.UNKNOWN_MESSAGE, message=NOT_A_BOT_ANSWER)
            )
            return
        await self.send_frame(
            frames.feedback_ack_frame(message_id=frame["message_id"], rating=frame["rating"])
        )

    async def _on_csat(self, frame: frames.CsatFrame) -> None:
        await db(services.csat_submit)(
            conversation=await self._stored(),
            score=frame["score"],
            comment=frame.get("comment", ""),
        )
        await self.send_frame(frames.csat_ack_frame(score=frame["score"]))

    async def _on_handoff_request(self, frame: dict | None = None) -> None:
        try:
            outcome = await db(handoff.handoff_request)(conversation=await self._stored())
        except services.ConversationClosed:
            await self.send_frame(
                frames.error_frame(code=frames.ErrorCode.CLOSED, message=CLOSED_MESSAGE)
            )
            return
        # An answer under way stops by itself: its run hears the status change.
        await self._send_handoff_ack(outcome)

    async def _send_handoff_ack(self, outcome: handoff.HandoffOutcome) -> None:
        await self.send_frame(
            frames.handoff_ack_frame(
                agents_available=outcome.agents_available,
                ask_contact=not outcome.agents_available,
                business_hours=outcome.business_hours,
                business_hours_text=hours.away_text(
                    outcome.business_hours, language=self.conversation.language
                ),
            )
        )

    async def _on_contact(self, frame: frames.ContactFrame) -> None:
        await db(handoff.contact_submit)(
            conversation=await self._stored(),
            email=frame["email"],
            name=frame.get("name", ""),
        )
        await self.send_frame(frames.contact_ack_frame())

    async def _on_customer_token(self, frame: frames.CustomerTokenFrame) -> None:
        await self.send_frame(await self._verify_customer(frame["token"]))

    async def _on_action_confirm(self, frame: frames.ActionConfirmFrame) -> None:
        await self._answer_call(answering.confirm_call, frame["call_id"])

    async def _on_action_cancel(self, frame: frames.ActionCancelFrame) -> None:
        await self._answer_call(answering.cancel_call, frame["call_id"])

    async def _answer_call(self, answer, call_id: int) -> None:
        """The customer's Confirm or Cancel on an action card. Every socket of the
        conversation gets the call's new status; this one also gets it when nothing changed
        (a second click, another tab first), so its card never waits."""
        frame = None
        if self.conversation is not None and not self.conversation._state.adding:
            frame = await answer(self.conversation.id, call_id)
        await self.send_frame(
            frame
            or frames.error_frame(
                code=frames.ErrorCode.UNKNOWN_ACTION_CALL,
                message="No such action in this conversation; ask again.",
            )
        )

    async def _on_typing(self, frame: dict | None = None) -> None:
        now = time.monotonic()
        if (
            self.conversation is None
            or self.conversation._state.adding
            or now - self.typing_sent_at < TYPING_EVERY_SECONDS
        ):
            return  # (nobody watches a conversation that has not said anything yet)
        self.typing_sent_at = now
        await self.channel_layer.group_send(
            group_events.watch_group(self.conversation.id),
            group_events.conv_typing(conversation_id=str(self.conversation.id), who="customer"),
        )

    async def _on_close(self, frame: dict) -> None:
        await db(services.conversation_close)(
            conversation=await self._stored(), closed_by="The customer"
        )
        await self._tell_closed()

    async def _tell_closed(self) -> None:
        if not self.closed_told:
            self.closed_told = True
            await self.send_frame(frames.conversation_closed_frame())

    async def _on_message(self, frame: frames.MessageFrame) -> None:
        client_id = frame.get("client_id")
        draft = self.conversation._state.adding  # stored with this, its first message

        async def ack(message: Message, created: bool) -> None:
            if draft:  # (another tab may have stored it first: that row is the one)
                self.conversation = message.conversation
                await drafts.forget(self.conversation.pk)
            await self.send_frame(
                frames.ack_frame(client_id=client_id, message_id=message.id, duplicate=not created)
            )

        try:
            turn = await turns.customer_says(
                conversation=self.conversation,
                text=frame["text"],
                client_id=client_id,
                channel_name=self.channel_name,
                on_stored=ack,
            )
        except services.ConversationClosed:
            await self.send_frame(
                frames.error_frame(
                    code=frames.ErrorCode.CLOSED,
                    message=CLOSED_MESSAGE,
                    client_id=client_id,
                )
            )
            return
        if turn.outcome == turns.Outcome.HANDOFF:
            await self._send_handoff_ack(turn.handoff)

    # --- answers (a chat.answering.CustomerAudience): a run's frames, and new runs ---------

    async def answer_frame(self, event: dict) -> None:
        await self.send_frame(event["frame"])

    async def answer_started(self, event: dict) -> None:
        # Another tab (or process) asked: show this socket the same answer.
        await answering.join(self.conversation.id, self.channel_name, answering.CUSTOMER)

    # --- agent events (group conversation.<id>, sent by chat.handoff and agents.services) ----

    async def conv_status(self, event: dict) -> None:
        # An answer under way stops by itself: its run is in the same group.
        self.conversation.status = event["status"]
        if event["status"] == Conversation.Status.CLOSED:
            await self._tell_closed()
        else:
            await self._tell(event)

    async def conv_message(self, event: dict) -> None:
        await self._tell(event)

    async def conv_typing(self, event: dict) -> None:
        await self._tell(event)

    async def conv_action(self, event: dict) -> None:
        await self._tell(event)

    async def _tell(self, event: dict) -> None:
        frame = group_events.customer_frame_for(event)
        if frame is not None:
            await self.send_frame(frame)

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))


def frame_handler_name(frame_type: str) -> str:
    """The consumer method that handles a client frame type: "handoff.request" →
    `_on_handoff_request` (as Channels names the handler of a group event after its type)."""
    return "_on_" + frame_type.replace(".", "_")


def _history_item(message: Message, language: str) -> frames.HistoryItem:
    item: frames.HistoryItem = {
        "id": message.id,
        "role": message.role,
        "text": message.text,
        "created_at": message.created_at.isoformat(),
        "client_id": message.client_id,
        "partial": message.is_partial,
        "rating": feedback.rating if (feedback := getattr(message, "feedback", None)) else None,
        "agent_name": (
            handoff.agent_name(message.author) if message.role == Message.Role.AGENT else ""
        ),
    }
    calls = list(message.action_calls.all())  # prefetched
    if calls:
        item["calls"] = [answering.call_frame(call, language=language) for call in calls]
    return item
