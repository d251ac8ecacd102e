"""The worker's events for an answer (inference.start, .delta, .done, .error) turned into the
frames its audience sees. A part of AnswerRun (chat/answering/run.py)."""

import logging
import time

from chat import fallback, frames, guards, metrics, services
from chat.answering.answer import Answer
from chat.answering.proposing import names_a_tool
from inference_worker import protocol
from runtime.aio import db

log = logging.getLogger(__name__)


class WorkerEvents:
    """AnswerRun's handling of the worker's events (`self` is the run)."""

    async def _on_start(self, answer: Answer, event: dict) -> None:
        if event.get("type") == "inference.start":
            answer.trimmed = int(event.get("trimmed") or 0)
            answer.passages = int(event.get("passages") or 0)
        if answer.started_at is None:
            answer.started_at = answer.last_event_at
            metrics.QUEUE_WAIT.observe(answer.started_at - answer.sent_at)
        if answer.message is not None:
            return
        try:
            answer.message = await db(services.bot_message_start)(
                conversation=self.conversation, model_name=event.get("model", "")
            )
        except services.BotSilenced:
            # A human took the conversation between the request and its first token.
            await self._cancel(answer, "silenced")
            metrics.answer_ended(metrics.TAKEN_OVER, "silenced")
            answer.finished = self.ended = True
            return
        await self._update_claim()  # late joiners now learn which message streams
        await self._emit(
            frames.bot_start_frame(message_id=answer.message.pk, reply_to=answer.question.pk)
        )
        if answer.prefix:
            # The product's apology streams first, before the model has said a word.
            answer.parts.append(answer.prefix)
            await self._emit(
                frames.bot_delta_frame(message_id=answer.message.pk, text=answer.prefix)
            )

    async def _on_delta(self, answer: Answer, event: dict) -> None:
        await self._on_start(answer, event)  # tolerate a lost start
        if answer.finished:
            return
        text = event.get("text", "")
        # An empty delta is output the worker holds back (a possible tool call): the first
        # token came all the same.
        if answer.first_token_at is None:
            answer.first_token_at = time.monotonic()
            metrics.FIRST_TOKEN.observe(answer.first_token_at - answer.sent_at)
        if answer.punctuation is not None:
            text = answer.punctuation.feed(text)
        if text:
            answer.parts.append(text)
            await self._emit(frames.bot_delta_frame(message_id=answer.message.pk, text=text))

    async def _on_done(self, answer: Answer, event: dict) -> None:
        await self._on_start(answer, event)
        if answer.finished:
            return
        answer.trimmed = int(event.get("trimmed") or 0)
        answer.passages = int(event.get("passages") or 0)
        if answer.offered is not None and (
            event.get("tool_calls")
            or event.get("invalid_tool_call")
            or names_a_tool(self._model_text(answer), answer.offered)
        ):
            # The product's own tools: the model's calls are the product's to decide, and
            # never the customer's to see (proposing.py).
            await self._on_proposed_calls(answer, event)
            return
        finish_reason = str(event.get("finish_reason") or "stop")
        limited = bool(
            answer.stream_guards
            and (answer.stream_guards["max_words"] or answer.stream_guards["max_han"])
        )
        if finish_reason == guards.REPETITION or (finish_reason == guards.LENGTH and limited):
            answer.guards.append(finish_reason)
            metrics.guarded(finish_reason)
        kept = event.get("text")
        if isinstance(kept, str):
            # The worker cut a loop or an overrun back to a sentence, or gives back output it
            # held that was no valid tool call: show the answer as it stands.
            await self._replace_text(answer, self._punctuated(answer, kept))
        answer.tool_calls = event.get("tool_calls") or None
        if answer.guarded and not answer.tool_calls and await self._broke_a_rule(answer):
            return  # asked again: the second answer streams in place of this one
        if answer.quoted:
            metrics.answer_ended(metrics.GUARDED, guards.QUOTED)
        else:
            metrics.model_answered(finish_reason, time.monotonic() - answer.sent_at)
        await self._finish(
            answer,
            finish_reason=finish_reason,
            partial=finish_reason
            not in ("stop", guards.LENGTH, guards.REPETITION, protocol.TOOL_CALLS),
            **answer.usage(event),
        )

    async def _on_error(self, answer: Answer, event: dict) -> None:
        log.warning(
            "worker error for %s: %s %s", answer.request_id, event.get("code"), event.get("message")
        )
        reason = (
            fallback.REASON_BUSY
            if event.get("code") == protocol.InferenceErrorCode.OVERLOADED
            else fallback.REASON_ERROR
        )
        await self._give_up(reason)
