"""The console's WebSocket, /ws/console/: thin — authorise, join groups, forward events.

Staff only. Every console socket is in the `console` group (inbox changes, hand-off alerts,
tickets) and in the `watch.<id>` group of the one conversation it shows. What arrives from
those groups is forwarded to the browser as it is (shapes in chat.group_events; the error and
pong frames are the customer socket's, chat.frames; all in docs/protocol.md).

Client → server frames:
    {"type": "ping"}                                  presence beat, answered with pong
    {"type": "watch", "conversation_id": "<uuid>"}    show this conversation live
    {"type": "unwatch"}
    {"type": "typing", "conversation_id": "<uuid>"}   "agent is typing" to the customer
"""

import json
import logging
import time
from urllib.parse import urlparse

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator
from django.db import DatabaseError
from redis.exceptions import RedisError

from agents import presence, selectors
from chat import answering, frames, group_events, metrics
from chat.frames import ErrorCode
from chat.handoff import agent_name
from chat.protocol import FrameError
from runtime.aio import db
from runtime.redis_client import get_redis

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
MAX_FRAME_CHARS = 2048  # console frames are tiny
TYPING_EVERY_SECONDS = 2.5  # "agent is typing" reaches the customer at most this often


class ConsoleConsumer(AsyncWebsocketConsumer):
    user = None
    watching: str | None = None
    typing_sent_at: float = 0.0

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if not _same_host_origin(self.scope):
            # Defence in depth: asgi.py checks this too, but a staff member's cookies must
            # never open the console from another site's page, whatever the routing.
            await self._refuse(
                ErrorCode.ORIGIN_NOT_ALLOWED, "The console only opens from this desk's own pages."
            )
            return
        if user is None or not (user.is_authenticated and user.is_active and user.is_staff):
            await self._refuse(ErrorCode.FORBIDDEN, "The console is for staff: log in first.")
            return
        self.user = user
        metrics.socket_opened(metrics.CONSOLE, self)
        self.name = agent_name(user)
        await self.channel_layer.group_add(group_events.CONSOLE_GROUP, self.channel_name)
        await self._beat()

    async def _refuse(self, code: str, message: str) -> None:
        await self.send_frame(frames.error_frame(code=code, message=message))
        await self.close(code=CLOSE_FORBIDDEN)

    async def disconnect(self, code: int) -> None:
        metrics.socket_closed(metrics.CONSOLE, self)
        if self.user is None:
            return
        await self.channel_layer.group_discard(group_events.CONSOLE_GROUP, self.channel_name)
        await self._unwatch()
        try:
            await presence.leave(get_redis(), self.user.pk, self.channel_name)
        except (RedisError, OSError):
            log.warning("could not record that agent %s left", self.user.pk)

    async def _beat(self) -> None:
        try:
            await presence.beat(get_redis(), self.user.pk, self.channel_name)
        except (RedisError, OSError):  # presence is best effort; the console still works
            log.warning("could not record that agent %s is online", self.user.pk)

    # --- browser frames ------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.user is None:
            return
        try:
            frame = _parse(text_data, bytes_data)
            handler = {
                "ping": self._on_ping,
                "watch": self._on_watch,
                "unwatch": self._on_unwatch,
                "typing": self._on_typing,
            }.get(frame["type"])
            if handler is None:
                raise FrameError(
                    ErrorCode.UNKNOWN_TYPE, "type must be one of ping, watch, unwatch, typing."
                )
            await handler(frame)
        except FrameError as exc:
            await self.send_frame(frames.error_frame(code=exc.code, message=exc.message))
        except DatabaseError:
            log.exception("console frame failed")
            await self.send_frame(
                frames.error_frame(
                    code=ErrorCode.UNAVAILABLE, message="The database failed; try again."
                )
            )

    async def _on_ping(self, frame: dict) -> None:
        await self._beat()
        # Renewed with every beat: group memberships are lost with a Redis restart.
        await self.channel_layer.group_add(group_events.CONSOLE_GROUP, self.channel_name)
        if self.watching:
            await self.channel_layer.group_add(
                group_events.watch_group(self.watching), self.channel_name
            )
        await self.send_frame(frames.pong_frame())

    async def _on_watch(self, frame: dict) -> None:
        conversation_id = _conversation_id(frame)
        exists = await db(selectors.conversation_exists)(conversation_id=conversation_id)
        if not exists:
            raise FrameError(ErrorCode.NOT_FOUND, "No conversation has this id.")
        if self.watching != str(conversation_id):
            await self._unwatch()
            self.watching = str(conversation_id)
            answering.register_socket(self.channel_name, self)
            await self.channel_layer.group_add(
                group_events.watch_group(self.watching), self.channel_name
            )
            # The bot's answer under way, if any, from its first word.
            await answering.join(self.watching, self.channel_name, answering.CONSOLE)

    async def _on_unwatch(self, frame: dict) -> None:
        await self._unwatch()

    async def _unwatch(self) -> None:
        if self.watching is not None:
            watching, self.watching = self.watching, None
            answering.unregister_socket(self.channel_name)
            await self.channel_layer.group_discard(
                group_events.watch_group(watching), self.channel_name
            )
            await answering.leave(watching, self.channel_name)

    async def _on_typing(self, frame: dict) -> None:
        conversation_id = _conversation_id(frame)
        now = time.monotonic()
        if now - self.typing_sent_at < TYPING_EVERY_SECONDS:
            return
        holds = await db(selectors.holds)(conversation_id=conversation_id, user=self.user)
        if not holds:
            raise FrameError(
                ErrorCode.NOT_HOLDER, "Only the agent holding the conversation is shown typing."
            )
        self.typing_sent_at = now
        cid = str(conversation_id)
        typing = group_events.conv_typing(conversation_id=cid, who="agent", name=self.name)
        await self.channel_layer.group_send(group_events.conversation_group(cid), typing)

    # --- group events, forwarded as they are ---------------------------------------------------

    async def conv_status(self, event: dict) -> None:
        await self.send_frame(event)

    async def conv_message(self, event: dict) -> None:
        await self.send_frame(event)

    async def conv_typing(self, event: dict) -> None:
        await self.send_frame(event)

    # conv_bot and answer_started make this a chat.answering.ConsoleAudience: a run of this
    # process calls conv_bot directly.
    async def conv_bot(self, event: dict) -> None:
        if event.get("conversation_id") == self.watching:
            await self.send_frame(event)

    async def answer_started(self, event: dict) -> None:
        if event.get("conversation_id") == self.watching:
            await answering.join(self.watching, self.channel_name, answering.CONSOLE)

    async def console_update(self, event: dict) -> None:
        await self.send_frame(event)

    async def console_handoff(self, event: dict) -> None:
        await self.send_frame(event)

    async def console_ticket(self, event: dict) -> None:
        await self.send_frame(event)

    async def send_frame(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))


def _same_host_origin(scope) -> bool:
    """The handshake's Origin names a host in ALLOWED_HOSTS (as Channels' validator checks)."""
    origin = dict(scope.get("headers", [])).get(b"origin")
    try:
        parsed = urlparse(origin.decode("latin1")) if origin is not None else None
        return AllowedHostsOriginValidator(None).valid_origin(parsed)
    except ValueError:  # a malformed port, for one
        return False


def _parse(text_data: str | None, bytes_data: bytes | None) -> dict:
    if text_data is None:
        raise FrameError(ErrorCode.BAD_FRAME, "Frames are JSON text.")
    if len(text_data) > MAX_FRAME_CHARS:
        raise FrameError(ErrorCode.BAD_FRAME, f"Frames are at most {MAX_FRAME_CHARS} characters.")
    try:
        frame = json.loads(text_data)
    except (ValueError, RecursionError):
        raise FrameError(ErrorCode.BAD_FRAME, "Frames are JSON objects.") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise FrameError(ErrorCode.BAD_FRAME, 'Frames are JSON objects with a "type".')
    return frame


def _conversation_id(frame: dict):
    conversation_id = selectors.parse_conversation_id(frame.get("conversation_id"))
    if conversation_id is None or not isinstance(frame.get("conversation_id"), str):
        raise FrameError(ErrorCode.BAD_FRAME, "conversation_id must be a conversation's id.")
    return conversation_id
