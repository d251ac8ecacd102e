"""An HTTP request in a conversation's audience, the way a customer's socket is.

The request joins the conversation's group and registers with `chat.answering` like a socket,
so an answer's frames reach it whether this process or another one runs the answer, and a
takeover or hand-off reaches it too. Frames land in a queue that the view reads: whole for a
plain response, one by one for a Server-Sent Events stream. Leaving says `now`: an HTTP client
that went away does not come back, so the answer stops in the engine at once.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from chat import answering, frames, group_events
from chat.models import Conversation
from runtime.aio import cancel_and_wait
from runtime.cancellation import raise_if_cancelled

_REDIS_ERRORS = (RedisError, OSError)
# Beyond the answer's own deadlines, which end every answer with a bot.done (the fallback's,
# if need be): only a lost process leaves a listener waiting this long.
_MARGIN_SECONDS = 10.0


class GroupListener:
    """A member of the conversation's group for the length of one HTTP request: the group's
    events go to the methods named after them (conv.status → conv_status), as on a socket."""

    def __init__(self, conversation: Conversation):
        self.conversation = conversation
        self.cid = str(conversation.pk)
        self.queue: asyncio.Queue[dict] = asyncio.Queue()
        self.channel_name = ""
        self._layer = get_channel_layer()
        self._receiver: asyncio.Task | None = None
        self._group = group_events.conversation_group(self.cid)

    async def open(self):
        self.channel_name = await self._layer.new_channel()
        await self._layer.group_add(self._group, self.channel_name)
        self._receiver = asyncio.get_running_loop().create_task(self._receive())
        return self

    async def close(self) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            await self._layer.group_discard(self._group, self.channel_name)
        if self._receiver is not None:
            await cancel_and_wait(self._receiver)

    async def _receive(self) -> None:
        """Events sent through Redis: frames of a run in another process, the group's news."""
        while True:
            try:
                event = await self._layer.receive(self.channel_name)
            except _REDIS_ERRORS:
                raise_if_cancelled()  # redis-py reports a cancellation mid-read this way
                await asyncio.sleep(0.5)
                continue
            handler = getattr(self, event.get("type", "").replace(".", "_"), None)
            if handler is not None:
                await handler(event)


class AnswerListener(GroupListener):
    """In the audience of the conversation's answers, as a customer's socket is."""

    async def open(self) -> "AnswerListener":
        await super().open()
        answering.register_socket(self.channel_name, self)
        return self

    async def close(self) -> None:
        answering.unregister_socket(self.channel_name)
        with contextlib.suppress(*_REDIS_ERRORS):
            await answering.leave(self.cid, self.channel_name, now=True)
        await super().close()

    # --- what a customer socket hears: a chat.answering.CustomerAudience, as the socket is ----

    async def answer_frame(self, event: dict) -> None:
        self.queue.put_nowait(event["frame"])

    async def answer_started(self, event: dict) -> None:
        await answering.join(self.cid, self.channel_name, answering.CUSTOMER)

    async def conv_status(self, event: dict) -> None:
        self.queue.put_nowait({"type": "status", "status": event["status"]})

    # --- reading -------------------------------------------------------------------------------

    async def answer(self, question_id: int) -> AsyncIterator[dict]:
        """The frames of the bot's answer to `question_id` (or to a newer message of the same
        customer): bot.start, bot.delta…, bot.done. Ends after a `status` frame instead when
        the bot falls silent (a human took over or was asked for, or the conversation closed)
        before the answer began; after it began, the answer's own bot.done ends it."""
        cfg = settings.CHAT
        deadline = time.monotonic() + (
            cfg["FIRST_TOKEN_TIMEOUT_SECONDS"] + cfg["ANSWER_TIMEOUT_SECONDS"] + _MARGIN_SECONDS
        )
        streaming = None
        while True:
            try:
                frame = await asyncio.wait_for(
                    self.queue.get(), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                yield frames.error_frame(
                    code=frames.ErrorCode.UNAVAILABLE,
                    message="No answer came in time. Please try again.",
                )
                return
            kind = frame["type"]
            if kind == "status":
                if streaming is None and frame["status"] != Conversation.Status.BOT:
                    yield frame
                    return
            elif kind == "action":
                # A call made for this answer: before its text (a trigger's), or after its
                # start (one the model proposed; the text then starts anew).
                yield frame
            elif kind == "bot.start":
                if (frame.get("reply_to") or 0) >= question_id:
                    streaming = frame["message_id"]
                    yield frame
            elif streaming is not None and frame.get("message_id") == streaming:
                yield frame
                if kind == "bot.done":
                    return


class NewsListener(GroupListener):
    """What the customer is told of the agents' doings (joined, replies, typing, hand-back,
    closed), for a bridge that carries a human agent's replies to its own channel."""

    async def conv_status(self, event: dict) -> None:
        self._tell(event)

    async def conv_message(self, event: dict) -> None:
        self._tell(event)

    async def conv_typing(self, event: dict) -> None:
        self._tell(event)

    async def conv_action(self, event: dict) -> None:
        self._tell(event)

    def _tell(self, event: dict) -> None:
        frame = group_events.customer_frame_for(event)
        if frame is not None:
            self.queue.put_nowait(frame)

    async def news(self, keepalive_seconds: float) -> AsyncIterator[dict | None]:
        """Customer frames as they happen; None after `keepalive_seconds` of quiet (the
        stream sends a comment then, so proxies keep it open). Ends after the close."""
        while True:
            try:
                frame = await asyncio.wait_for(self.queue.get(), keepalive_seconds)
            except TimeoutError:
                # Group memberships live in Redis and go with a Redis restart: renew.
                with contextlib.suppress(*_REDIS_ERRORS):
                    await self._layer.group_add(self._group, self.channel_name)
                yield None
                continue
            yield frame
            if frame["type"] == "conversation.closed":
                return
