"""AnswerRun: one conversation's answers in this process, one question after another.

A run owns the conversation's claim (chat/answering/claims.py) while it answers, and has a
channel-layer channel of its own, which is

- the reply channel of the inference requests it sends, and
- a member of the conversation's group, so takeover, hand-off and closing reach it directly.

Its events (the worker's, sockets joining and leaving, the conversation's status) arrive in its
inbox; the run handles them one at a time between its deadlines. The run's parts by concern:
requests (requesting.py), the worker's events (streaming.py), the guards (guarding.py) and the
endings (endings.py); the life cycle, the deadlines, the audience and delivery are here.
"""

import asyncio
import contextlib
import logging
import time
import uuid

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from chat import fallback, frames, group_events, limits, metrics, selectors
from chat.answering import claims, partials, registry
from chat.answering.acting import ActionTaking
from chat.answering.answer import Answer
from chat.answering.audience import CUSTOMER, deliver
from chat.answering.endings import AnswerEndings
from chat.answering.guarding import AnswerGuards
from chat.answering.inbox import Inbox
from chat.answering.prompt import AnswerContext, AnswerOptions
from chat.answering.proposing import CallProposals
from chat.answering.requesting import RequestSending
from chat.answering.streaming import WorkerEvents
from chat.models import Conversation, Message
from inference_worker import pool
from runtime.aio import cancel_and_wait, db
from runtime.cancellation import raise_if_cancelled
from runtime.channel_layer import DeskChannelLayer
from runtime.redis_client import get_redis

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError)


class AnswerRun(
    RequestSending, ActionTaking, CallProposals, WorkerEvents, AnswerGuards, AnswerEndings
):
    def __init__(self, conversation: Conversation, first_socket: str):
        self.conversation = conversation
        self.cid = str(conversation.pk)
        self.layer = get_channel_layer()
        # Named exactly like a consumer's channel (what `new_channel()` returns): channels-redis
        # runs one receive loop per process, on the key of that name's part before "!".
        self.channel = f"specific.{self.layer.client_prefix}!{uuid.uuid4().hex}"
        self.audience: dict[str, str] = {first_socket: CUSTOMER}  # channel → kind
        self.inbox: Inbox = Inbox()
        self.answer: Answer | None = None
        self.alone_since: float | None = None
        self.ended = False  # no further question is taken (status changed, process stopping)
        self.interrupted = False  # the process is stopping
        self.task: asyncio.Task | None = None
        self.options: dict[int, AnswerOptions] = {}  # by question id
        # Read in the hop that stored the question (chat/turns.py), by question id.
        self.contexts: dict[int, AnswerContext] = {}
        self._receiver: asyncio.Task | None = None
        self._next_tick = 0.0
        self.questions_handed = 0  # see hand()
        self._questions_seen = 0  # questions_handed when _next_question last looked
        self._holds_claim = False

    # --- claim ---------------------------------------------------------------------------------

    def claim_value(self) -> dict:
        message = self.answer.message if self.answer is not None else None
        return {"channel": self.channel, "message_id": message.pk if message else None}

    async def claim(self) -> bool:
        """Take the conversation for this process; False if another run holds it."""
        self._holds_claim = await claims.take(self.cid, self.claim_value())
        return self._holds_claim

    async def _update_claim(self) -> None:
        """The claim's value, now that it names the message being streamed."""
        await claims.update(self.cid, self.claim_value())

    async def _release_claim(self) -> bool:
        """Let go of the claim, if held; whether someone may have asked meanwhile (see
        claims.release)."""
        if not self._holds_claim:
            return False
        self._holds_claim = False  # before awaiting: a second caller (interrupt) does nothing
        return await claims.release(self.cid, self.channel)

    # --- life cycle ----------------------------------------------------------------------------

    def launch(self, question: Message) -> None:
        registry.runs[self.cid] = self
        self.task = registry.spawn(self._main(question))
        claims.keep_alive()

    def post(self, event: dict) -> None:
        self.inbox.put_nowait(event)

    def hand(self, question: Message, socket: str, options: AnswerOptions | None) -> None:
        """A question a socket of this process stored while this run answers the conversation:
        the run takes it up when the answer under way ends (see _next_question), and the socket
        joins the audience."""
        if options is not None:
            self.options[question.pk] = options
        self.questions_handed += 1
        self.post(group_events.answer_join(channel=socket, kind=CUSTOMER))

    async def _main(self, question: Message | None) -> None:
        try:
            await self._listen()
            await self._announce()
            while question is not None and not self.ended:
                await self._answer(question)
                question = await self._next_question(question)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("answer run of %s failed", self.cid)
            if self.answer is not None and not self.answer.finished:
                with contextlib.suppress(Exception):
                    await self._give_up(fallback.REASON_ERROR)
        finally:
            try:
                await self._leave()
            finally:
                # An ended task keeps the exception it ended with (the receiver's
                # CancelledError, this task's own when the run is stopped), whose traceback
                # holds this run: without them, the run is freed at once instead of waiting
                # in a reference cycle for a full garbage collection.
                self._receiver = self.task = None

    async def _leave(self) -> None:
        if registry.runs.get(self.cid) is self:
            del registry.runs[self.cid]
        # The claim first: while it stands, no other socket or process answers here.
        await self._release_claim()
        detach = getattr(self.layer, "detach", None)
        if detach is not None:
            detach(self.channel)
        if self._receiver is not None:
            await cancel_and_wait(self._receiver)
        with contextlib.suppress(*_REDIS_ERRORS):
            await self.layer.group_discard(group_events.conversation_group(self.cid), self.channel)

    async def _listen(self) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            await self.layer.group_add(group_events.conversation_group(self.cid), self.channel)
        # The desk's layer puts this channel's messages straight into the inbox; the receiver
        # below then only keeps the process's batches being read (see DeskChannelLayer.attach).
        attach = getattr(self.layer, "attach", None)
        if attach is not None:
            attach(self.channel, self.inbox.put_nowait)
        self._receiver = registry.spawn(self._receive())

    async def _receive(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except _REDIS_ERRORS:
                # redis-py turns a cancellation during a read into a connection error: keep
                # it a cancellation, or this loop would outlive the run.
                raise_if_cancelled()
                await asyncio.sleep(0.5)  # the watchdog deadlines cover the gap
                continue
            self.inbox.put_nowait(event)

    async def _announce(self) -> None:
        """Every other tab of the customer, and every agent watching, joins this answer."""
        event = group_events.answer_started(conversation_id=self.cid, channel=self.channel)
        # The run and the socket that asked know already: a new conversation's only tab then
        # costs one round trip here, and nothing is sent.
        known = (self.channel, *self.audience)
        for group, exclude in (
            (group_events.conversation_group(self.cid), known),
            (group_events.watch_group(self.cid), ()),
        ):
            with contextlib.suppress(ChannelFull, *_REDIS_ERRORS):
                if isinstance(self.layer, DeskChannelLayer):
                    await self.layer.group_send(group, event, exclude=exclude)
                else:  # another layer (tests' in-memory one): everyone hears it
                    await self.layer.group_send(group, event)

    async def _next_question(self, answered: Message) -> Message | None:
        """A newer question that arrived while answering, if the bot still holds the
        conversation. The claim is released first and taken again after looking, so a question
        stored while this run was finishing is seen either here or by its own socket.

        The database is asked only if someone asked: a socket of this process handed a
        question over, or one elsewhere found the claim held (claims.take marks that)."""
        if self.answer is not None:
            await self._serve_late_joins(self.answer)
        if self.ended:
            return None
        asked = await self._release_claim()
        if self.answer is not None:  # joins that were on their way when the claim went
            await self._serve_late_joins(self.answer)
        # A question handed over while the query ran may be missing from what it read (on
        # PostgreSQL the socket stores it in another thread, and the query's snapshot can
        # predate it), and its socket counts on this run: look again. From the last look to
        # the run leaving the registry nothing is awaited, so a question stored later finds no
        # run here and starts its own.
        while True:
            handed = self.questions_handed
            if not asked and handed == self._questions_seen:
                return None
            latest = await db(selectors.newest_unanswered_customer_message)(
                conversation_id=self.cid, after_id=answered.pk
            )
            self._questions_seen, asked = handed, False
            if latest is not None or self.questions_handed == handed:
                break
        if latest is None or not await self.claim():
            return None
        return latest

    async def interrupt(self, reason: str) -> None:
        """The process is stopping: keep the text so far; the worker stops too. Every socket
        of the process calls this as it is cancelled; only the first call does anything (a
        second cancel would cut the run's own clean-up short)."""
        if self.interrupted:
            return
        self.interrupted = self.ended = True
        answer = self.answer
        if answer is not None and not answer.finished:
            metrics.answer_ended(metrics.CANCELLED, "shutdown")
            answer.finished = True
            with contextlib.suppress(Exception):
                await self._cancel(answer, reason)
            if answer.message is not None:
                self._flush_held_text(answer, send=False)
                await self._store(answer, finish_reason=reason, partial=True)
        # Released here as well as when the task ends: the process may exit before that.
        await self._release_claim()
        if self.task is not None:
            self.task.cancel()

    # --- one answer ----------------------------------------------------------------------------

    async def _answer(self, question: Message) -> None:
        answer = self.answer = Answer(question=question)
        try:
            if not await self._send_request(answer):
                return
            while not answer.finished:
                deadline = self._next_deadline(answer)
                if not self.inbox.empty():
                    # Events already waiting (a batch from Redis): taken without waiting; the
                    # deadlines are checked between events.
                    await self._on_event(answer, self._take_waiting(answer))
                    if time.monotonic() >= deadline:
                        await self._on_deadline(answer)
                    continue
                if not await self.inbox.wait(max(0.0, deadline - time.monotonic())):
                    await self._on_deadline(answer)
                    continue
                await self._on_event(answer, self._take_waiting(answer))
        finally:
            if answer.slot is not None:
                await limits.release_answer_slot(answer.slot)

    def _take_waiting(self, answer: Answer) -> dict:
        """The next waiting event. Deltas of this answer waiting right behind it join it: one
        frame (one JSON encoding, one socket write) per socket instead of several. That happens
        only when the process is behind, and then it sheds work as the backlog grows instead of
        adding lag with every delta."""
        event = self.inbox.get_nowait()
        if event.get("type") != "inference.delta" or event.get("request_id") != answer.request_id:
            return event
        texts = None
        while not self.inbox.empty():
            following = self.inbox.peek()
            if (
                following.get("type") != "inference.delta"
                or following.get("request_id") != answer.request_id
            ):
                break
            texts = texts or [event.get("text", "")]
            texts.append(self.inbox.get_nowait().get("text", ""))
        return event if texts is None else {**event, "text": "".join(texts)}

    # --- deadlines -----------------------------------------------------------------------------

    def _next_deadline(self, answer: Answer) -> float:
        cfg = settings.CHAT
        deadlines = [answer.sent_at + cfg["ANSWER_TIMEOUT_SECONDS"], self._next_tick]
        if answer.first_token_at is None:
            deadlines.append(answer.sent_at + cfg["FIRST_TOKEN_TIMEOUT_SECONDS"])
        if answer.started_at is None:
            deadlines.append(answer.next_presence_check)
        else:
            deadlines.append(answer.last_event_at + cfg["STALL_TIMEOUT_SECONDS"])
        if self.alone_since is not None:
            deadlines.append(self.alone_since + cfg["REJOIN_GRACE_SECONDS"])
        return min(deadlines)

    async def _on_deadline(self, answer: Answer) -> None:
        cfg, now = settings.CHAT, time.monotonic()
        if self.alone_since is not None and now >= self.alone_since + cfg["REJOIN_GRACE_SECONDS"]:
            # Every customer socket left and none came back: stop spending the engine on it.
            await self._stop(answer, "disconnected")
            self.ended = True
        elif now >= answer.sent_at + cfg["ANSWER_TIMEOUT_SECONDS"] or (
            answer.first_token_at is None
            and now >= answer.sent_at + cfg["FIRST_TOKEN_TIMEOUT_SECONDS"]
        ):
            log.warning("deadline passed for %s (%s)", answer.request_id, self.cid)
            await self._cancel(answer, "timeout")
            await self._give_up(fallback.REASON_TIMEOUT)
        elif answer.started_at is not None and (
            now >= answer.last_event_at + cfg["STALL_TIMEOUT_SECONDS"]
        ):
            log.warning(
                "worker silent for %.0f s on %s: presumed dead; %s gets the fallback",
                now - answer.last_event_at,
                answer.request_id,
                self.cid,
            )
            await self._cancel(answer, "stalled")
            await self._give_up(fallback.REASON_WORKER_LOST)
        elif answer.started_at is None and now >= answer.next_presence_check:
            answer.next_presence_check = now + settings.INFERENCE["WORKER_TTL_SECONDS"] / 2
            try:
                live = await pool.live_workers(get_redis())
            except _REDIS_ERRORS:
                live = 1  # cannot tell: the first-token deadline still holds
            if live == 0:
                log.warning(
                    "no live worker for queued %s; %s gets the fallback",
                    answer.request_id,
                    self.cid,
                )
                await self._cancel(answer, "no_worker")
                await self._give_up(fallback.REASON_UNAVAILABLE)
        if now >= self._next_tick:
            self._next_tick = now + cfg["PARTIAL_SAVE_SECONDS"]
            self._tick(answer)

    def _tick(self, answer: Answer) -> None:
        """Keep the streamed text saved (the claim is kept alive by claims.keep_alive)."""
        if (
            answer.message is not None
            and not answer.finished
            and len(answer.text) != answer.saved_chars
        ):
            text = answer.text
            partials.save_soon(answer.message.pk, text)
            answer.saved_chars = len(text)

    # --- events --------------------------------------------------------------------------------

    async def _on_event(self, answer: Answer, event: dict) -> None:
        kind = event.get("type", "")
        if kind.startswith("inference."):
            if event.get("request_id") != answer.request_id or answer.finished:
                return  # an answer that already ended (cancelled, timed out)
            answer.last_event_at = time.monotonic()
            handler = {
                "inference.start": self._on_start,
                "inference.delta": self._on_delta,
                "inference.done": self._on_done,
                "inference.error": self._on_error,
            }.get(kind)
            if handler is not None:
                await handler(answer, event)
            elif kind == "inference.keepalive" and answer.started_at is None:
                answer.started_at = answer.last_event_at
        elif kind == "answer.join":
            await self._on_join(
                answer, event["channel"], event.get("kind", CUSTOMER), event.get("message_id")
            )
        elif kind == "answer.leave":
            self.audience.pop(event["channel"], None)
            if CUSTOMER not in self.audience.values():
                if event.get("now"):  # nobody to wait for: the grace period is over already
                    self.alone_since = time.monotonic() - settings.CHAT["REJOIN_GRACE_SECONDS"]
                elif self.alone_since is None:
                    self.alone_since = time.monotonic()
        elif kind == "conv.status":
            self.conversation.status = event["status"]
            reason = {
                Conversation.Status.HUMAN: "takeover",
                Conversation.Status.WAITING: "handoff",
                Conversation.Status.CLOSED: "closed",
            }.get(event["status"])
            if reason is not None:
                await self._stop(answer, reason)
                self.ended = True

    async def _on_join(
        self, answer: Answer, channel: str, kind: str, left_out: int | None = None
    ) -> None:
        if kind == CUSTOMER:
            self.alone_since = None
        if channel in self.audience:
            return
        self.audience[channel] = kind
        message = answer.message
        if message is None or (answer.finished and message.pk != left_out):
            return
        # What the newcomer missed, as one delta after the start; and the end, if the answer
        # ended while the newcomer was reading its history without it.
        await self._deliver_to(
            channel,
            kind,
            frames.bot_start_frame(message_id=message.pk, reply_to=answer.question.pk),
        )
        if answer.text:
            await self._deliver_to(
                channel, kind, frames.bot_delta_frame(message_id=message.pk, text=answer.text)
            )
        if answer.finished and answer.done_frame is not None:
            await self._deliver_to(channel, kind, answer.done_frame)

    def _late_joins(self) -> list[dict]:
        """Joins that reached the inbox after the answer ended (a reload at that moment)."""
        joins, others = [], []
        while not self.inbox.empty():
            event = self.inbox.get_nowait()
            (joins if event.get("type") == "answer.join" else others).append(event)
        for event in others:
            self.inbox.put_nowait(event)
        return joins

    async def _serve_late_joins(self, answer: Answer) -> None:
        for event in self._late_joins():
            await self._on_join(
                answer, event["channel"], event.get("kind", CUSTOMER), event.get("message_id")
            )

    # --- delivery ------------------------------------------------------------------------------

    async def _emit_all(self, frames: list[dict]) -> None:
        for frame in frames:
            await self._emit(frame)

    async def _emit(self, frame: dict) -> None:
        for channel, kind in list(self.audience.items()):
            await self._deliver_to(channel, kind, frame)

    async def _deliver_to(self, channel: str, kind: str, frame: dict) -> None:
        try:
            await deliver(self.layer, channel, kind, self.cid, frame)
        except ChannelFull:
            log.warning("socket %s of %s is not reading; it leaves the audience", channel, self.cid)
            self.audience.pop(channel, None)
        except Exception:  # one broken socket must not end the answer for everyone
            log.warning("could not send %s to %s", frame["type"], channel, exc_info=True)
            self.audience.pop(channel, None)
