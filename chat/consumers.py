"""The customer's WebSocket, /ws/chat/: thin — parse, authorise, call a service, send.

Every frame it sends is built in `chat.events` and documented in docs/protocol.md.
"""

import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from chat import events, memory, selectors, services
from chat.answering import BotAnswer
from chat.models import Conversation, Message
from chat.protocol import FrameError, connect_params, parse_client_frame

log = logging.getLogger(__name__)

# Per-socket flood control lives in process memory: a socket is served by one process.
_rate_limiter = MovingWindowRateLimiter(MemoryStorage())

CLOSE_NOT_FOUND = 4404


class ChatConsumer(AsyncWebsocketConsumer):
    conversation: Conversation | None = None
    answer: BotAnswer | None = None

    async def connect(self) -> None:
        await self.accept()
        params = connect_params(self.scope)
        self.rate_limits = parse_many(settings.CHAT["SOCKET_RATE_LIMIT"])
        if params.conversation_id or params.token:
            self.conversation = await database_sync_to_async(selectors.conversation_for_customer)(
                conversation_id=params.conversation_id, token=params.token
            )
            if self.conversation is None:
                await self.send_frame(events.error_frame(
                    code=events.ErrorCode.NOT_FOUND,
                    message="No conversation matches this id and token. "
                    "Connect without them to start a new conversation.",
                ))
                await self.close(code=CLOSE_NOT_FOUND)
                return
            await self._send_resume()
        else:
            self.conversation, token = await database_sync_to_async(services.conversation_start)(
                language=params.language, region=params.region, timezone_name=params.timezone,
                page_url=params.page_url, user_agent=params.user_agent,
            )
            await self.send_frame(events.conversation_frame(
                conversation_id=str(self.conversation.id), token=token,
                status=self.conversation.status, resumed=False,
            ))

    async def _send_resume(self) -> None:
        conversation = self.conversation
        await self.send_frame(events.conversation_frame(
            conversation_id=str(conversation.id), token=None, status=conversation.status,
            resumed=True,
        ))
        history = await database_sync_to_async(selectors.conversation_history)(
            conversation_id=conversation.id
        )
        await self.send_frame(events.history_frame(messages=[_history_item(m) for m in history]))
        # A question whose answer was lost with the last connection is answered now.
        question = await database_sync_to_async(selectors.unanswered_question)(
            conversation_id=conversation.id
        )
        if question is not None and conversation.status == Conversation.Status.BOT:
            await self._answer(question)

    async def disconnect(self, code: int) -> None:
        if self.answer is not None:
            await self.answer.on_disconnect()
            self.answer = None

    # --- customer frames -----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.conversation is None:
            return
        cfg = settings.CHAT
        try:
            if not all(_rate_limiter.hit(limit, self.channel_name) for limit in self.rate_limits):
                raise FrameError(events.ErrorCode.RATE_LIMITED,
                                 "Too many frames; wait a few seconds before sending again.")
            frame = parse_client_frame(text_data, bytes_data, max_bytes=cfg["MAX_FRAME_BYTES"],
                                       max_chars=cfg["MAX_MESSAGE_CHARS"])
        except FrameError as exc:
            await self.send_frame(events.error_frame(code=exc.code, message=exc.message))
            return
        if frame["type"] == "ping":
            await self.send_frame(events.pong_frame())
        elif frame["type"] == "message":
            await self._on_message(frame)

    async def _on_message(self, frame: events.MessageFrame) -> None:
        client_id = frame.get("client_id")
        try:
            await self.conversation.arefresh_from_db(fields=["status"])
            if self.conversation.status == Conversation.Status.CLOSED:
                await self.send_frame(events.error_frame(
                    code=events.ErrorCode.CLOSED,
                    message="This conversation is closed. Start a new one to write again.",
                ))
                return
            message, created = await database_sync_to_async(services.message_add_customer)(
                conversation=self.conversation, text=frame["text"], client_id=client_id
            )
        except DatabaseError:
            log.exception("storing a message of %s failed", self.conversation.id)
            await self.send_frame(events.error_frame(
                code=events.ErrorCode.UNAVAILABLE,
                message="The message could not be saved. Please send it again in a moment.",
            ))
            return
        await self.send_frame(events.ack_frame(client_id=client_id, message_id=message.id,
                                               duplicate=not created))
        if created:
            await memory.remember(message)
            if self.conversation.status == Conversation.Status.BOT:
                await self._answer(message)

    async def _answer(self, question: Message) -> None:
        """Start a bot answer unless one is under way; that one's end picks up the rest."""
        if self.answer is not None:
            return
        self.answer = BotAnswer(
            conversation=self.conversation, channel_layer=self.channel_layer,
            reply_channel=self.channel_name, send_frame=self.send_frame, question=question,
        )
        await self.answer.start()
        await self._after_answer_event()

    async def _after_answer_event(self) -> None:
        if self.answer is None or not self.answer.finished:
            return
        answered = self.answer.question
        self.answer = None
        # Messages that arrived while the bot was answering get an answer of their own.
        latest = await database_sync_to_async(selectors.newest_customer_message)(
            conversation_id=self.conversation.id, after_id=answered.id
        )
        if latest is not None and self.conversation.status == Conversation.Status.BOT:
            await self._answer(latest)

    # --- worker events (channel layer) ---------------------------------------------------------

    async def inference_start(self, event: dict) -> None:
        await self._route(event, "on_start")

    async def inference_delta(self, event: dict) -> None:
        await self._route(event, "on_delta")

    async def inference_done(self, event: dict) -> None:
        await self._route(event, "on_done")

    async def inference_error(self, event: dict) -> None:
        await self._route(event, "on_error")

    async def answer_timeout(self, event: dict) -> None:
        await self._route(event, "on_timeout")

    async def _route(self, event: dict, handler: str) -> None:
        # Events of an answer that already ended (cancelled, timed out) are dropped here.
        if self.answer is None or not self.answer.owns(event):
            return
        await getattr(self.answer, handler)(event)
        await self._after_answer_event()

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))


def _history_item(message: Message) -> events.HistoryItem:
    return {
        "id": message.id,
        "role": message.role,
        "text": message.text,
        "created_at": message.created_at.isoformat(),
        "client_id": message.client_id,
        "partial": message.is_partial,
    }
