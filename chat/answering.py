"""One bot answer, from request to stored message: the consumer owns one of these at a time.

The consumer feeds it the worker's events in order (Channels dispatches a consumer's events one
at a time, so no locking is needed) and it sends the customer's frames. Deadlines are watched
by a task that does not touch state itself: it posts an `answer.timeout` event to the
consumer's own channel, which then arrives in order with the worker's events.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from chat import events, fallback, memory, selectors, services
from chat.models import Conversation, Message
from chat.prompting import render_system_prompt
from chat.punctuation import FullwidthPunctuation
from cs_site.redis_client import get_redis
from inference_worker import presence

log = logging.getLogger(__name__)

SendFrame = Callable[[dict], Awaitable[None]]

_MODEL_ROLE = {
    Message.Role.CUSTOMER: "user",
    Message.Role.BOT: "assistant",
    Message.Role.AGENT: "assistant",
}


def build_messages(system_prompt: str, turns: list[dict]) -> list[events.ChatTurn]:
    """System prompt first, then the turns as the model's user/assistant roles."""
    messages: list[events.ChatTurn] = [{"role": "system", "content": system_prompt}]
    messages += [{"role": _MODEL_ROLE[t["role"]], "content": t["text"]} for t in turns
                 if t["role"] in _MODEL_ROLE]
    return messages


@database_sync_to_async
def _prompt_parts(conversation: Conversation) -> tuple[str, events.Sampling, bool]:
    """System prompt, sampling, and whether to make Chinese punctuation full-width."""
    profile = selectors.bot_profile_for(conversation)
    site = selectors.site_of(conversation)
    system_prompt = render_system_prompt(
        profile.system_prompt, site_name=site.name if site else profile.site_name,
        language=conversation.language,
        region=conversation.region, timezone=conversation.timezone, now=timezone.now(),
    )
    sampling: events.Sampling = {
        "temperature": profile.temperature,
        "top_p": profile.top_p,
        "max_tokens": profile.max_tokens,
        "frequency_penalty": profile.frequency_penalty,
    }
    fullwidth = profile.fullwidth_punctuation and conversation.language.lower().startswith("zh")
    return system_prompt, sampling, fullwidth


class BotAnswer:
    def __init__(self, *, conversation: Conversation, channel_layer: BaseChannelLayer,
                 reply_channel: str, send_frame: SendFrame, question: Message):
        self.conversation = conversation
        self.channel_layer = channel_layer
        self.reply_channel = reply_channel
        self.send_frame = send_frame
        self.question = question
        self.request_id = uuid.uuid4().hex
        self.message: Message | None = None
        self.parts: list[str] = []
        self.sent_at = 0.0
        self.first_token_at: float | None = None
        self.finished = False
        self.punctuation: FullwidthPunctuation | None = None
        self._watchdog: asyncio.Task | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            if await presence.live_workers(get_redis()) == 0:
                await self._fallback(fallback.REASON_UNAVAILABLE)
                return
            system_prompt, sampling, fullwidth = await _prompt_parts(self.conversation)
            self.punctuation = FullwidthPunctuation() if fullwidth else None
            turns = await memory.recent_turns(self.conversation.id, newest_id=self.question.id)
            request = events.inference_request(
                request_id=self.request_id,
                reply_channel=self.reply_channel,
                messages=build_messages(system_prompt, turns),
                sampling=sampling,
                deadline=time.time() + settings.CHAT["ANSWER_TIMEOUT_SECONDS"],
            )
            self.sent_at = time.monotonic()
            await self.channel_layer.send(settings.INFERENCE["CHANNEL"], request)
        except ChannelFull:
            log.warning("inference queue full; answering %s with the fallback", self.request_id)
            await self._fallback(fallback.REASON_UNAVAILABLE)
            return
        except (RedisError, OSError):
            # Redis is the transport to the workers: without it the model cannot answer,
            # but the question is stored and the fallback rules still can.
            log.exception("cannot reach the inference workers for %s", self.request_id)
            await self._fallback(fallback.REASON_UNAVAILABLE)
            return
        self._watchdog = asyncio.create_task(self._watch_deadlines())

    async def _watch_deadlines(self) -> None:
        cfg = settings.CHAT
        await asyncio.sleep(cfg["FIRST_TOKEN_TIMEOUT_SECONDS"])
        if self.first_token_at is None:
            await self._post_timeout("first_token")
            return
        remaining = cfg["ANSWER_TIMEOUT_SECONDS"] - (time.monotonic() - self.sent_at)
        await asyncio.sleep(max(0.0, remaining))
        await self._post_timeout("answer")

    async def _post_timeout(self, which: str) -> None:
        await self.channel_layer.send(
            self.reply_channel,
            {"type": "answer.timeout", "request_id": self.request_id, "deadline": which},
        )

    # --- worker events -------------------------------------------------------------------------

    def owns(self, event: dict) -> bool:
        return not self.finished and event.get("request_id") == self.request_id

    async def on_start(self, event: dict) -> None:
        if self.message is None and not self.finished:
            try:
                self.message = await database_sync_to_async(services.bot_message_start)(
                    conversation=self.conversation, model_name=event.get("model", "")
                )
            except services.BotSilenced:
                # A human took the conversation between the request and its first token.
                await self.cancel("silenced")
                self._stop()
                return
            await self._emit(events.bot_start_frame(message_id=self.message.id))

    async def on_delta(self, event: dict) -> None:
        await self.on_start(event)  # tolerate a lost start: deltas still reach the customer
        if self.finished:
            return
        if self.first_token_at is None and event.get("text"):
            self.first_token_at = time.monotonic()
        text = event.get("text", "")
        if self.punctuation is not None:
            text = self.punctuation.feed(text)
        await self._append(text)

    async def _append(self, text: str, *, send: bool = True) -> None:
        if not text:
            return
        self.parts.append(text)
        if send:
            await self._emit(events.bot_delta_frame(message_id=self.message.id, text=text))

    async def _flush_held_text(self, *, send: bool = True) -> None:
        """Text the punctuation pass held back, waiting for what follows: the answer ended."""
        if self.punctuation is not None and self.message is not None:
            await self._append(self.punctuation.finish(), send=send)

    async def on_done(self, event: dict) -> None:
        await self.on_start(event)
        if self.finished:
            return
        await self._finish(
            finish_reason=str(event.get("finish_reason") or "stop"),
            partial=event.get("finish_reason") not in ("stop", "length"),
            prompt_tokens=event.get("prompt_tokens"),
            completion_tokens=event.get("completion_tokens"),
        )

    async def on_error(self, event: dict) -> None:
        log.warning("worker error for %s: %s %s", self.request_id, event.get("code"),
                    event.get("message"))
        await self._give_up(fallback.REASON_ERROR)

    async def on_timeout(self, event: dict) -> None:
        log.warning("%s deadline passed for %s", event.get("deadline"), self.request_id)
        await self.cancel("timeout")
        await self._give_up(fallback.REASON_TIMEOUT)

    async def stop(self, reason: str) -> None:
        """End the answer now: abort it in the engine and keep what was said, flagged partial
        with `reason` as its finish reason ("disconnected", "closed", "takeover", "handoff").
        The customer's socket is told the answer ended unless it is gone."""
        if self.finished:
            return
        await self.cancel(reason)
        if self.message is not None:
            if reason == "disconnected":
                await self._flush_held_text(send=False)
                await self._store(finish_reason=reason, partial=True, prompt_tokens=None,
                                  completion_tokens=None)
            else:
                await self._finish(finish_reason=reason, partial=True, prompt_tokens=None,
                                   completion_tokens=None)
        self._stop()

    async def cancel(self, reason: str) -> None:
        await self.channel_layer.group_send(
            settings.INFERENCE["CONTROL_GROUP"],
            events.inference_cancel(request_id=self.request_id, reason=reason),
        )

    # --- endings -------------------------------------------------------------------------------

    async def _finish(self, *, finish_reason: str, partial: bool, prompt_tokens, completion_tokens):
        await self._flush_held_text()
        message = await self._store(finish_reason=finish_reason, partial=partial,
                                    prompt_tokens=prompt_tokens,
                                    completion_tokens=completion_tokens)
        self._stop()
        await self._emit(events.bot_done_frame(
            message_id=message.id,
            usage={"prompt_tokens": message.prompt_tokens or 0,
                   "completion_tokens": message.completion_tokens or 0},
            ttft_ms=message.ttft_ms, total_ms=message.total_ms or 0,
            finish_reason=finish_reason, fallback=False, partial=partial,
        ))
        await memory.remember(message)

    async def _give_up(self, reason: str) -> None:
        """Keep any partial answer, then let the fallback rules answer."""
        if self.message is not None:
            await self._finish(finish_reason=reason, partial=True, prompt_tokens=None,
                               completion_tokens=None)
        self._stop()
        await self._fallback(reason)

    async def _fallback(self, reason: str) -> None:
        self._stop()
        try:
            message = await database_sync_to_async(_store_fallback)(
                self.conversation, self.question, reason
            )
        except services.BotSilenced:
            return  # a human holds the conversation: the fallback stays silent too
        await self._emit(events.bot_start_frame(message_id=message.id))
        await self._emit(events.bot_delta_frame(message_id=message.id, text=message.text))
        await self._emit(events.bot_done_frame(
            message_id=message.id, usage={"prompt_tokens": 0, "completion_tokens": 0},
            ttft_ms=None, total_ms=0, finish_reason=reason, fallback=True, partial=False,
        ))
        await memory.remember(message)

    async def _store(self, *, finish_reason: str, partial: bool, prompt_tokens,
                     completion_tokens) -> Message:
        now = time.monotonic()
        ttft_ms = (None if self.first_token_at is None
                   else round((self.first_token_at - self.sent_at) * 1000))
        return await database_sync_to_async(services.bot_message_finish)(
            message=self.message, text="".join(self.parts), finish_reason=finish_reason,
            partial=partial, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            ttft_ms=ttft_ms, total_ms=round((now - self.sent_at) * 1000),
        )

    async def _emit(self, frame: dict) -> None:
        """To the customer, and mirrored to agents watching the conversation in the console."""
        await self.send_frame(frame)
        try:
            await self.channel_layer.group_send(
                events.watch_group(self.conversation.id),
                events.conv_bot(conversation_id=str(self.conversation.id), frame=frame),
            )
        except (ChannelFull, RedisError, OSError):
            log.warning("could not mirror %s to the console", frame["type"])

    def _stop(self) -> None:
        self.finished = True
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()


def _store_fallback(conversation: Conversation, question: Message, reason: str) -> Message:
    answer = fallback.choose_answer(fallback.load_rules(), text=question.text,
                                    language=conversation.language)
    return services.bot_message_fallback(conversation=conversation, text=answer, reason=reason)
