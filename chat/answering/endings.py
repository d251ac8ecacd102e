"""How an answer ends: stopped (takeover, hand-off, closing, the customer gone), finished,
given up for the fallback rules, and stored. A part of AnswerRun (chat/answering/run.py)."""

import contextlib
import time

from channels.exceptions import ChannelFull
from django.conf import settings
from redis.exceptions import RedisError

from chat import fallback, frames, guards, memory, metrics, services
from chat.answering import partials
from chat.answering.answer import Answer
from chat.models import Conversation, Message
from inference_worker import protocol
from runtime.aio import db

_REDIS_ERRORS = (RedisError, OSError)


class AnswerEndings:
    """AnswerRun's endings (`self` is the run)."""

    async def _stop(self, answer: Answer, reason: str) -> None:
        """End the answer now: abort it in the engine and keep what was said, flagged partial
        with `reason` as its finish reason ("disconnected", "closed", "takeover", "handoff")."""
        if answer.finished:
            return
        metrics.answer_stopped(reason)
        await self._cancel(answer, reason)
        if answer.message is None:
            answer.finished = True
        elif reason == "disconnected":
            answer.finished = True
            self._flush_held_text(answer, send=False)
            await self._store(answer, finish_reason=reason, partial=True)
        else:
            await self._finish(answer, finish_reason=reason, partial=True)

    async def _cancel(self, answer: Answer, reason: str) -> None:
        with contextlib.suppress(ChannelFull, *_REDIS_ERRORS):
            await self.layer.group_send(
                settings.INFERENCE["CONTROL_GROUP"],
                protocol.inference_cancel(request_id=answer.request_id, reason=reason),
            )

    async def _finish(
        self,
        answer: Answer,
        *,
        finish_reason: str,
        partial: bool,
        prompt_tokens=None,
        completion_tokens=None,
    ) -> None:
        answer.finished = True
        await self._emit_all(self._flush_held_text(answer))
        if answer.quoted:
            finish_reason = guards.QUOTED
        elif answer.fallback and answer.guards:
            finish_reason = answer.guards[-1]  # the rule the answers broke
        message = await self._store(
            answer,
            finish_reason=finish_reason,
            partial=partial,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        answer.done_frame = frames.bot_done_frame(
            message_id=message.pk,
            usage={
                "prompt_tokens": message.prompt_tokens or 0,
                "completion_tokens": message.completion_tokens or 0,
            },
            ttft_ms=message.ttft_ms,
            total_ms=message.total_ms or 0,
            finish_reason=finish_reason,
            fallback=answer.fallback,
            partial=partial,
            sources=message.sources,
            guards=tuple(answer.guards),
            offer_human=answer.offer_human,
            tool_calls=answer.tool_calls,
        )
        if answer.calls:
            # On the record before the answer is announced: a client that reads the
            # transcript on `bot.done` finds the calls with it.
            await self._attach_calls(answer)
        await self._emit(answer.done_frame)
        await memory.remember(message)

    async def _give_up(self, reason: str) -> None:
        """Keep any partial answer, then let the fallback rules answer."""
        answer = self.answer
        if answer.message is not None and not answer.finished:
            await self._finish(answer, finish_reason=reason, partial=True)
        await self._fallback(answer, reason)

    async def _fallback(self, answer: Answer, reason: str) -> None:
        answer.finished = True
        try:
            message = await db(store_fallback)(self.conversation, answer.question, reason)
        except services.BotSilenced:
            metrics.answer_ended(metrics.TAKEN_OVER, "silenced")
            self.ended = True
            return  # a human holds the conversation: the fallback stays silent too
        metrics.answer_ended(metrics.FALLBACK, reason)
        await self._emit(frames.bot_start_frame(message_id=message.pk, reply_to=answer.question.pk))
        await self._emit(frames.bot_delta_frame(message_id=message.pk, text=message.text))
        await self._emit(
            frames.bot_done_frame(
                message_id=message.pk,
                usage={"prompt_tokens": 0, "completion_tokens": 0},
                ttft_ms=None,
                total_ms=0,
                finish_reason=reason,
                fallback=True,
                partial=False,
            )
        )
        await memory.remember(message)

    def _flush_held_text(self, answer: Answer, *, send: bool = True) -> list[dict]:
        """Text the punctuation pass held back, waiting for what follows: the answer ended."""
        if answer.punctuation is None or answer.message is None:
            return []
        text = answer.punctuation.finish()
        if not text:
            return []
        answer.parts.append(text)
        return [frames.bot_delta_frame(message_id=answer.message.pk, text=text)] if send else []

    async def _store(
        self,
        answer: Answer,
        *,
        finish_reason: str,
        partial: bool,
        prompt_tokens=None,
        completion_tokens=None,
    ) -> Message:
        now = time.monotonic()
        ttft_ms = (
            None
            if answer.first_token_at is None
            else round((answer.first_token_at - answer.sent_at) * 1000)
        )
        # What the model saw: the system prompt with the passages the worker kept, and the
        # turns it kept.
        prompt, sources = None, []
        if answer.prompt:
            grounded = answer.grounded
            system = {
                **answer.prompt[0],
                "content": protocol.grounded_system(
                    answer.prompt[0]["content"], grounded.grounding, answer.passages
                ),
            }
            prompt = [system, *answer.prompt[1 + answer.trimmed :]]
            sources = grounded.sources_of(answer.passages)
        partials.forget(answer.message.pk)  # the whole text is stored now
        return await db(services.bot_message_finish)(
            message=answer.message,
            text=answer.text,
            finish_reason=finish_reason,
            partial=partial,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            ttft_ms=ttft_ms,
            total_ms=round((now - answer.sent_at) * 1000),
            prompt=prompt,
            sources=sources,
            guards=tuple(answer.guards),
            fallback=answer.fallback,
        )


def fallback_text(conversation: Conversation, question: Message) -> str:
    return fallback.choose_answer(
        fallback.load_rules(), text=question.text, language=conversation.language
    )


def store_fallback(conversation: Conversation, question: Message, reason: str) -> Message:
    return services.bot_message_fallback(
        conversation=conversation, text=fallback_text(conversation, question), reason=reason
    )
