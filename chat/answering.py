"""Bot answers, owned by the conversation rather than by a socket.

A conversation has at most one answer under way, in the whole deployment: the process that
wants to answer first claims the conversation in Redis (`SET NX` with a short TTL that the
owner keeps renewing), so a second tab, a reload or another Daphne process never starts a second
answer to the same question. The owner runs an `AnswerRun`: a task with its own channel-layer
channel, which is

- the reply channel of the inference requests it sends, and
- a member of the conversation's group, so takeover, hand-off and closing reach it directly.

Every socket showing the conversation is in the run's audience: the customer's tabs in any
process and the agents watching it in the console. A socket that joins mid-answer gets the text
so far, then the rest. Frames reach sockets of this process by a direct call and sockets of other
processes by one channel-layer send each, so a conversation nobody else watches costs no extra
Redis round trip per delta.

The answer does not depend on the socket that asked: when the last customer socket leaves, the
run waits a short grace period (a reload comes back within it) and only then aborts the request
in the engine, keeping what was said.

Nothing ends silently: a dead worker is noticed by its silence (workers send a keepalive while a
request runs), a full queue or no worker gets the fallback at once, deadlines get the fallback,
and the text streamed so far is saved every few seconds and when the process shuts down.
"""

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from channels.db import DatabaseSyncToAsync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.utils import timezone
from redis.exceptions import RedisError

from chat import (
    fallback,
    frames,
    group_events,
    guards,
    limits,
    memory,
    metrics,
    selectors,
    services,
)
from chat.knowledge import grounding
from chat.knowledge import retrieval as knowledge
from chat.models import BotProfile, Conversation, Message
from chat.prompting import language_name, render_system_prompt
from chat.punctuation import FullwidthPunctuation
from cs_site import broadcast
from cs_site.cancellation import raise_if_cancelled
from cs_site.channel_layer import DeskChannelLayer
from cs_site.redis_client import get_redis
from inference_worker import pool, protocol  # pool: the workers' presence, our settings

log = logging.getLogger(__name__)



def db(func):
    """`func` in a thread of a pool rather than on the one thread Channels runs all database
    work on: one slow query must not hold up every other conversation's answer. (Each call
    closes its connection after it, as database_sync_to_async does.)

    Except on SQLite (the embedded default), which lets one writer in at a time: there a pool
    only turns a burst of customers' writes into lock waits and retries (measured: answers
    then start late and all at once), so its calls keep to the one thread."""
    return DatabaseSyncToAsync(func, thread_sensitive=_SQLITE)


_SQLITE = connection.vendor == "sqlite"


CUSTOMER, CONSOLE = "customer", "console"
_REDIS_ERRORS = (RedisError, OSError)

_MODEL_ROLE = {
    Message.Role.CUSTOMER: "user",
    Message.Role.BOT: "assistant",
    Message.Role.AGENT: "assistant",
}

# Sockets of this process by channel name, so a run reaches them without Redis.
_sockets: dict[str, object] = {}
# Runs of this process by conversation id.
_runs: dict[str, "AnswerRun"] = {}
# Every task of every run (answers and their channel receivers), until it has ended: the event
# loop keeps only weak references to tasks, and a stopping process waits for these.
tasks: set[asyncio.Task] = set()


class _Inbox:
    """A run's events, in order; `peek` lets the run merge deltas that wait behind each other.

    Not an asyncio.Queue read through wait_for: on Python 3.11 wait_for wraps every wait in a
    task of its own, and a run waits once per delta (measured: a tenth of Daphne's time at
    400 streams). Here a wait costs one future and one timer."""

    def __init__(self):
        self._events: collections.deque[dict] = collections.deque()
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, event: dict) -> None:
        self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._events

    def peek(self) -> dict:
        return self._events[0]

    def get_nowait(self) -> dict:
        return self._events.popleft()

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for an event; False if none is waiting then."""
        if not self._events:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(seconds, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return bool(self._events)


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _spawn(coro) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def build_messages(system_prompt: str, turns: list[dict]) -> list[protocol.ChatTurn]:
    """System prompt first, then the turns as the model's user/assistant roles."""
    messages: list[protocol.ChatTurn] = [{"role": "system", "content": system_prompt}]
    messages += [{"role": _MODEL_ROLE[t["role"]], "content": t["text"]} for t in turns
                 if t["role"] in _MODEL_ROLE]
    return messages


@dataclass(frozen=True)
class _PromptParts:
    system_prompt: str
    sampling: protocol.Sampling
    fullwidth: bool  # make Chinese punctuation full-width
    offer_human_when_nothing: bool  # no help-centre article covers the question: say so
    max_words: int  # the answer limit (chat/guards.py, inference_worker/textguards.py)
    max_han: int


@db
def _prompt_parts(conversation: Conversation, options: "AnswerOptions | None" = None,
                  ) -> _PromptParts:
    """System prompt, sampling and the profile's choices for one answer. A caller's options
    are clamped: at most the profile's max_tokens, temperature and top_p within the ranges
    the profile itself allows."""
    profile = selectors.bot_profile_for(conversation)
    site = selectors.site_of(conversation)
    template = (options.system_prompt if options is not None and options.system_prompt
                else profile.system_prompt)
    system_prompt = render_system_prompt(
        template, site_name=site.name if site else profile.site_name,
        language=conversation.language,
        region=conversation.region, timezone=conversation.timezone, now=timezone.now(),
        max_words=profile.answer_max_words, max_han=profile.answer_max_han,
    )
    sampling: protocol.Sampling = {
        "temperature": profile.temperature,
        "top_p": profile.top_p,
        "max_tokens": profile.max_tokens,
        "frequency_penalty": profile.frequency_penalty,
    }
    if options is not None:
        if options.max_tokens is not None:
            sampling["max_tokens"] = max(1, min(options.max_tokens, profile.max_tokens))
        if options.temperature is not None:
            sampling["temperature"] = min(max(options.temperature, 0.0), 2.0)
        if options.top_p is not None:
            sampling["top_p"] = min(max(options.top_p, 0.01), 1.0)
        if options.frequency_penalty is not None:
            sampling["frequency_penalty"] = min(max(options.frequency_penalty, -2.0), 2.0)
        if options.instructions:
            system_prompt += "\n\n" + options.instructions
    fullwidth = profile.fullwidth_punctuation and conversation.language.lower().startswith("zh")
    return _PromptParts(system_prompt, sampling, fullwidth, offer_human_when_nothing=(
        profile.when_no_knowledge == BotProfile.WhenNoKnowledge.OFFER_HUMAN),
        max_words=profile.answer_max_words, max_han=profile.answer_max_han)


# --- the public face: what consumers call -----------------------------------------------------


def register_socket(channel_name: str, consumer) -> None:
    """A socket of this process that can be in an audience (it has `answer_frame` or
    `conv_bot`, called directly instead of through Redis)."""
    _sockets[channel_name] = consumer


def unregister_socket(channel_name: str) -> None:
    _sockets.pop(channel_name, None)


def _claim_key(conversation_id) -> str:
    return f"chat:answering:{conversation_id}"


async def live_answer(conversation_id) -> dict | None:
    """The claim of the answer under way in this conversation, if any, in any process:
    {"channel": run's channel, "message_id": the bot message being streamed or None}."""
    run = _runs.get(str(conversation_id))
    if run is not None:
        return run.claim_value()
    try:
        raw = await get_redis().get(_claim_key(conversation_id))
    except _REDIS_ERRORS:
        return None
    return json.loads(raw) if raw else None


# How long a next question may wait for the previous answer to end: a client that sends it
# the moment it has that answer's bot.done would otherwise be told an answer is under way.
ANSWER_END_WAIT_SECONDS = 2.0


async def answer_ended(conversation_id, wait: float = ANSWER_END_WAIT_SECONDS) -> bool:
    """Whether no answer is under way in the conversation, waiting up to `wait` seconds for
    one that is ending: its run sends bot.done first and lets go of the conversation only
    after looking for a newer question (a database query), some milliseconds later."""
    deadline = time.monotonic() + wait
    while await live_answer(conversation_id) is not None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def join(conversation_id, channel_name: str, kind: str, *,
               claim: dict | None = None, left_out: int | None = None) -> None:
    """Show this socket the answer under way, if any: the text so far, then the rest.
    `left_out`: the streaming answer the socket's history did not show (see answer_join)."""
    claim = claim or await live_answer(conversation_id)
    if claim is not None:
        await _tell_run(claim["channel"], group_events.answer_join(
            channel=channel_name, kind=kind, message_id=left_out))


async def leave(conversation_id, channel_name: str, *, now: bool = False) -> None:
    """This socket no longer shows the conversation. `now`: the customer will not come back
    on it (see answer_leave)."""
    event = group_events.answer_leave(channel=channel_name, now=now)
    run = _runs.get(str(conversation_id))
    if run is not None:
        run.post(event)
        return
    claim = await live_answer(conversation_id)
    if claim is not None:
        await _tell_run(claim["channel"], event)


@dataclass(frozen=True)
class AnswerOptions:
    """What an API caller may choose for one answer, within the bot profile's limits (see
    `_prompt_parts`). None: the profile's value."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    # The caller's own system message, added to the profile's system prompt (which stays:
    # it carries the company's rules).
    instructions: str = ""
    # Staff only (the playground): a system prompt in place of the profile's, rendered with
    # the same variables.
    system_prompt: str | None = None
    # The product's guards (chat/guards.py), as every customer channel has them. Off for the
    # OpenAI-compatible API, which keeps OpenAI's semantics: its answers get the loop guard
    # alone.
    guards: bool = True


async def request_answer(*, conversation: Conversation, question: Message,
                         channel_name: str, options: AnswerOptions | None = None) -> None:
    """Make sure the bot answers `question` (and anything the customer adds meanwhile), once.

    If this process already answers the conversation, its run picks the question up when the
    answer under way ends; if another process does, that one will (it looks for newer
    questions after releasing its claim) with the profile's options. Otherwise this process
    claims it and answers.
    """
    cid = str(conversation.pk)
    run = _runs.get(cid)
    if run is not None:
        if options is not None:
            run.options[question.pk] = options
        run.post(group_events.answer_join(channel=channel_name, kind=CUSTOMER))
        return
    run = AnswerRun(conversation, channel_name)
    if not await run.claim():
        await join(cid, channel_name, CUSTOMER)
        return
    if options is not None:
        run.options[question.pk] = options
    run.launch(question)


async def _tell_run(run_channel: str, event: dict) -> None:
    run = next((r for r in _runs.values() if r.channel == run_channel), None)
    if run is not None:
        run.post(event)
        return
    with contextlib.suppress(ChannelFull, *_REDIS_ERRORS):
        await get_channel_layer().send(run_channel, event)


# Streamed text waiting to be saved (message id → text so far), and the task saving it.
_unsaved: dict[int, str] = {}
_saver: asyncio.Task | None = None


def _save_partial_soon(message_id: int, text: str) -> None:
    """Every answer's text so far is saved in one database hop for all of this process's
    answers, at most every PARTIAL_SAVE_SECONDS: a write rate that does not grow with the
    number of streams (one hop per stream made 250 streams queue 125 writes a second ahead of
    new questions)."""
    global _saver
    _unsaved[message_id] = text
    if _saver is None or _saver.done() or _saver.get_loop() is not asyncio.get_running_loop():
        _saver = _spawn(_save_partials())


async def _save_partials() -> None:
    while _unsaved:
        texts = dict(_unsaved)
        _unsaved.clear()
        try:
            await db(services.bot_messages_save_partial)(texts=texts)
        except Exception:  # the next save, or the answer's end, stores the text
            log.exception("could not save %d partial answers", len(texts))
        await asyncio.sleep(settings.CHAT["PARTIAL_SAVE_SECONDS"])


# Each run's claim, renewed for all the runs of this process in one script every
# PARTIAL_SAVE_SECONDS (one SET per run and tick cost 400 streams 200 round trips a second).
# A claim is renewed only while it is still this run's: between two questions a run lets go
# of it, and another process may have taken it.
_RENEW_OWN_CLAIMS = """
local renewed = 0
for i = 1, #KEYS do
    local v = redis.call('GET', KEYS[i])
    if v and cjson.decode(v)['channel'] == ARGV[i] then
        redis.call('PEXPIRE', KEYS[i], ARGV[#KEYS + 1])
        renewed = renewed + 1
    end
end
return renewed
"""
_renewer: asyncio.Task | None = None


def _keep_claims_alive() -> None:
    global _renewer
    if (_renewer is None or _renewer.done()
            or _renewer.get_loop() is not asyncio.get_running_loop()):
        _renewer = _spawn(_renew_claims())


async def _renew_claims() -> None:
    script = get_redis().register_script(_RENEW_OWN_CLAIMS)
    while _runs:
        await asyncio.sleep(settings.CHAT["PARTIAL_SAVE_SECONDS"])
        if not await _renew_once(script):
            return
        raise_if_cancelled()


async def _renew_once(script) -> bool:
    """One tick's renewals; False when no run is left. The runs are held only for the tick:
    a list kept across the sleep would keep ended runs alive, and a renewer stopped in its
    sleep (the process stopping) would keep them for good in its CancelledError's traceback."""
    runs = list(_runs.values())
    if not runs:
        return False
    try:
        await script(keys=[_claim_key(run.cid) for run in runs],
                     args=[*(run.channel for run in runs),
                           int(settings.CHAT["ANSWER_CLAIM_TTL_SECONDS"] * 1000)])
    except _REDIS_ERRORS as exc:  # the next tick tries again; claims last 3 ticks
        log.warning("could not renew %d answer claims (%s)", len(runs), exc.__class__.__name__)
    return True


async def persist_all(reason: str = "interrupted") -> None:
    """Save what every run of this process has streamed so far (the process is stopping).
    Daphne cancels every connection's consumer on SIGTERM and waits for them: the consumers
    call this then, so history after a restart shows what the customer saw, flagged partial,
    and the question is not answered twice."""
    runs = list(_runs.values())
    await asyncio.gather(*(run.interrupt(reason) for run in runs), return_exceptions=True)
    # Let each run release its claim before the process goes: a reload on the restarted
    # process then sees no answer under way and shows the saved text at once.
    ending = [run.task for run in runs if run.task is not None and not run.task.done()]
    if ending:
        await asyncio.wait(ending, timeout=2)
    # The events those endings caused (agents' views) leave before the process does.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(broadcast.flush(), 2)


# --- one conversation's answers ----------------------------------------------------------------


@dataclass
class _Answer:
    """The state of one answer: one inference request, one bot message."""

    question: Message
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    message: Message | None = None
    parts: list[str] = field(default_factory=list)
    saved_chars: int = 0
    sent_at: float = 0.0
    started_at: float | None = None  # a worker took the request
    first_token_at: float | None = None
    last_event_at: float = 0.0
    next_presence_check: float = 0.0
    punctuation: FullwidthPunctuation | None = None
    prompt: list[protocol.ChatTurn] = field(default_factory=list)  # as sent, before trimming
    trimmed: int = 0  # turns the worker left out to fit the token budget
    grounded: grounding.Grounded | None = None  # the help-centre passages offered
    passages: int = 0  # of them, those the worker's token budget held
    slot: limits.Slot | None = None  # the site's answers streaming at once
    done_frame: dict | None = None  # the bot.done sent, for a socket that joins after it
    finished: bool = False
    # The product's guards (chat/guards.py): on for customer channels.
    guarded: bool = True
    sampling: protocol.Sampling | None = None
    stream_guards: protocol.Guards | None = None
    prefix: str = ""  # the product's words before the model's (an apology)
    complaint: bool = False
    ask_details: bool = False  # the question is about an order, without its number
    guards: list[str] = field(default_factory=list)  # those that shaped the answer
    offer_human: bool = False
    retried: bool = False  # asked again once, with the rule it broke restated
    fallback: bool = False  # replaced by the fallback rules' answer after breaking a rule

    @property
    def text(self) -> str:
        return "".join(self.parts)


class AnswerRun:
    def __init__(self, conversation: Conversation, first_socket: str):
        self.conversation = conversation
        self.cid = str(conversation.pk)
        self.layer = get_channel_layer()
        # Named exactly like a consumer's channel (what `new_channel()` returns): channels-redis
        # runs one receive loop per process, on the key of that name's part before "!".
        self.channel = f"specific.{self.layer.client_prefix}!{uuid.uuid4().hex}"
        self.audience: dict[str, str] = {first_socket: CUSTOMER}
        self.inbox: _Inbox = _Inbox()
        self.answer: _Answer | None = None
        self.alone_since: float | None = None
        self.ended = False  # no further question is taken (status changed, process stopping)
        self.interrupted = False  # the process is stopping
        self.task: asyncio.Task | None = None
        self.options: dict[int, AnswerOptions] = {}  # by question id
        self._receiver: asyncio.Task | None = None
        self._next_tick = 0.0

    # --- claim ---------------------------------------------------------------------------------

    def claim_value(self) -> dict:
        message = self.answer.message if self.answer is not None else None
        return {"channel": self.channel, "message_id": message.pk if message else None}

    async def claim(self) -> bool:
        """Take the conversation for this process; False if another run holds it. Without
        Redis the answer proceeds (it will reach the fallback: the workers need Redis too)."""
        try:
            return bool(await get_redis().set(
                _claim_key(self.cid), json.dumps(self.claim_value()), nx=True,
                px=int(settings.CHAT["ANSWER_CLAIM_TTL_SECONDS"] * 1000)))
        except _REDIS_ERRORS:
            log.warning("cannot claim %s in Redis; answering without a claim", self.cid)
            return True

    async def _update_claim(self) -> None:
        """The claim's value, now that it names the message being streamed."""
        with contextlib.suppress(*_REDIS_ERRORS):
            await get_redis().set(_claim_key(self.cid), json.dumps(self.claim_value()),
                                  xx=True, px=int(settings.CHAT["ANSWER_CLAIM_TTL_SECONDS"] * 1000))

    async def _release_claim(self) -> None:
        # Only our own claim: compare and delete in one step.
        with contextlib.suppress(*_REDIS_ERRORS):
            await get_redis().eval(
                "local v = redis.call('GET', KEYS[1]) "
                "if v and cjson.decode(v)['channel'] == ARGV[1] then "
                "return redis.call('DEL', KEYS[1]) end return 0",
                1, _claim_key(self.cid), self.channel)

    # --- life cycle ----------------------------------------------------------------------------

    def launch(self, question: Message) -> None:
        _runs[self.cid] = self
        self.task = _spawn(self._main(question))
        _keep_claims_alive()

    def post(self, event: dict) -> None:
        self.inbox.put_nowait(event)

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
        if _runs.get(self.cid) is self:
            del _runs[self.cid]
        # The claim first: while it stands, no other socket or process answers here.
        await self._release_claim()
        detach = getattr(self.layer, "detach", None)
        if detach is not None:
            detach(self.channel)
        if self._receiver is not None:
            await cancel_and_wait(self._receiver)
        with contextlib.suppress(*_REDIS_ERRORS):
            await self.layer.group_discard(group_events.conversation_group(self.cid),
                                           self.channel)

    async def _listen(self) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            await self.layer.group_add(group_events.conversation_group(self.cid), self.channel)
        # The desk's layer puts this channel's messages straight into the inbox; the receiver
        # below then only keeps the process's batches being read (see DeskChannelLayer.attach).
        attach = getattr(self.layer, "attach", None)
        if attach is not None:
            attach(self.channel, self.inbox.put_nowait)
        self._receiver = _spawn(self._receive())

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
        for group, exclude in ((group_events.conversation_group(self.cid), known),
                               (group_events.watch_group(self.cid), ())):
            with contextlib.suppress(ChannelFull, *_REDIS_ERRORS):
                if isinstance(self.layer, DeskChannelLayer):
                    await self.layer.group_send(group, event, exclude=exclude)
                else:  # another layer (tests' in-memory one): everyone hears it
                    await self.layer.group_send(group, event)

    async def _next_question(self, answered: Message) -> Message | None:
        """A newer question that arrived while answering, if the bot still holds the
        conversation. The claim is released first and taken again after looking, so a question
        stored while this run was finishing is seen either here or by its own socket."""
        if self.answer is not None:
            await self._serve_late_joins(self.answer)
        if self.ended:
            return None
        await self._release_claim()
        if self.answer is not None:  # joins that were on their way when the claim went
            await self._serve_late_joins(self.answer)
        latest = await db(selectors.newest_unanswered_customer_message)(
            conversation_id=self.cid, after_id=answered.pk)
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
        answer = self.answer = _Answer(question=question)
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

    def _take_waiting(self, answer: _Answer) -> dict:
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
            if (following.get("type") != "inference.delta"
                    or following.get("request_id") != answer.request_id):
                break
            texts = texts or [event.get("text", "")]
            texts.append(self.inbox.get_nowait().get("text", ""))
        return event if texts is None else {**event, "text": "".join(texts)}

    async def _send_request(self, answer: _Answer) -> bool:
        """Send the request to the workers; False if the fallback or a guard answered
        instead."""
        cfg, inference = settings.CHAT, settings.INFERENCE
        options = self.options.pop(answer.question.pk, None)
        answer.guarded = options is None or options.guards
        language = self.conversation.language
        site = str(self.conversation.site_id or "")
        answer.slot = await limits.acquire_answer_slot(site_key=site)
        if answer.slot is None:
            log.warning("site %s has SITE_CONCURRENT_ANSWERS answers streaming; %s gets the "
                        "fallback", self.conversation.site_id, self.cid)
            await self._fallback(answer, fallback.REASON_BUSY)
            return False
        try:
            room, queue_limit = await self._room()
            if room.live == 0:
                await self._fallback(answer, fallback.REASON_UNAVAILABLE)
                return False
            if room.queued >= queue_limit:
                raise ChannelFull  # full already: no need to build the request
            # Independent reads, at once: the prompt's parts (database), the passages that
            # answer the question (a thread) and the recent turns (Redis).
            parts, hits, turns = await asyncio.gather(
                _prompt_parts(self.conversation, options),
                self._knowledge(answer.question.text),
                memory.recent_turns(self.cid, newest_id=answer.question.pk))
            if hits == [] and len(turns) > 1:
                hits = await self._follow_up_knowledge(answer.question, turns)
            answer.punctuation = FullwidthPunctuation() if parts.fullwidth else None
            if answer.guarded:
                answer.complaint = guards.is_complaint(answer.question.text)
                if (hits == [] and parts.offer_human_when_nothing
                        and not guards.is_greeting(answer.question.text)):
                    # Nothing in the help centre covers it: the product says so, in its own
                    # words, rather than asking the model not to invent an answer.
                    text = guards.text(guards.NOT_COVERED, language)
                    shaped_by = (guards.NOT_COVERED,)
                    if answer.complaint:
                        text = _joined(guards.text("apology", language), text, language=language)
                        shaped_by = (guards.COMPLAINT, guards.NOT_COVERED)
                    await self._guarded(answer, text, shaped_by, offer_human=True)
                    return False
                answer.ask_details = guards.needs_order_details(answer.question.text)
                if answer.complaint:
                    answer.prefix = guards.text("apology", language) + _glue(language)
            answer.grounded = grounding.ground(
                parts.system_prompt, hits,
                offer_human_when_nothing=parts.offer_human_when_nothing)
            answer.prompt = build_messages(answer.grounded.system_prompt, turns)
            answer.sampling = parts.sampling
            answer.stream_guards = {"loops": True,
                                    "max_words": parts.max_words if answer.guarded else 0,
                                    "max_han": parts.max_han if answer.guarded else 0}
            now = time.monotonic()
            answer.next_presence_check = now + inference["WORKER_TTL_SECONDS"] / 2
            self._next_tick = now + cfg["PARTIAL_SAVE_SECONDS"]
            answer.sent_at = answer.last_event_at = now
            await self._dispatch(answer, queue_limit)
        except ChannelFull:
            log.warning("inference queue full (%d slots, %s s per answer lately); %s gets the "
                        "fallback", room.slots,
                        f"{room.turnover:.1f}" if room.turnover else "?", self.cid)
            await self._fallback(answer, fallback.REASON_BUSY)
            return False
        except _REDIS_ERRORS as exc:
            # Redis is the transport to the workers: without it the model cannot answer,
            # but the question is stored and the fallback rules still can.
            log.warning("cannot reach the inference workers for %s (Redis: %s)", self.cid,
                        exc)
            await self._fallback(answer, fallback.REASON_UNAVAILABLE)
            return False
        return True

    async def _room(self) -> tuple[pool.Capacity, int]:
        """The workers' room, and how many requests may wait for them."""
        cfg, inference = settings.CHAT, settings.INFERENCE
        room = await pool.capacity(get_redis(), inference["CHANNEL"])
        return room, room.queue_limit(queue_per_slot=inference["QUEUE_PER_SLOT"],
                                      first_token_timeout=cfg["FIRST_TOKEN_TIMEOUT_SECONDS"])

    async def _dispatch(self, answer: _Answer, queue_limit: int) -> None:
        """Send the answer's request (its prompt as it stands) to the workers."""
        cfg, wall = settings.CHAT, time.time()
        request = protocol.inference_request(
            request_id=answer.request_id, reply_channel=self.channel,
            messages=answer.prompt, sampling=answer.sampling,
            grounding=answer.grounded.grounding,
            deadline=wall + cfg["ANSWER_TIMEOUT_SECONDS"] - (time.monotonic() - answer.sent_at),
            queued_at=wall, start_by=wall + cfg["FIRST_TOKEN_TIMEOUT_SECONDS"],
            guards=answer.stream_guards,
        )
        # Counted and queued in one atomic step: questions arriving together cannot all
        # slip in under the limit.
        await self.layer.send(settings.INFERENCE["CHANNEL"], request, capacity=queue_limit)

    async def _follow_up_knowledge(self, question: Message, turns: list[dict]) -> list | None:
        """A follow-up ("And to Germany?") names too little to be found alone: searched again
        together with the customer's previous message."""
        earlier = [t["text"] for t in turns[:-1] if t["role"] == Message.Role.CUSTOMER]
        if not earlier:
            return []
        return await self._knowledge(f"{earlier[-1]}\n{question.text}")

    async def _knowledge(self, question: str) -> list | None:
        """The help-centre passages that answer `question`; None when the knowledge base has
        nothing for this conversation's site, or cannot be searched: the answer is then not
        grounded, and no "nothing found" is claimed."""
        site_id = self.conversation.site_id
        try:
            if not await knowledge.covers(site_id):
                return None
            return await knowledge.search(
                question=question, site_id=site_id, language=self.conversation.language,
                limit=settings.KNOWLEDGE["PROMPT_PASSAGES"])
        except Exception:  # a broken index must not cost the customer the answer
            log.exception("knowledge search failed for %s; answering without it", self.cid)
            return None

    def _next_deadline(self, answer: _Answer) -> float:
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

    async def _on_deadline(self, answer: _Answer) -> None:
        cfg, now = settings.CHAT, time.monotonic()
        if self.alone_since is not None and now >= self.alone_since + cfg["REJOIN_GRACE_SECONDS"]:
            # Every customer socket left and none came back: stop spending the engine on it.
            await self._stop(answer, "disconnected")
            self.ended = True
        elif now >= answer.sent_at + cfg["ANSWER_TIMEOUT_SECONDS"] or (
                answer.first_token_at is None
                and now >= answer.sent_at + cfg["FIRST_TOKEN_TIMEOUT_SECONDS"]):
            log.warning("deadline passed for %s (%s)", answer.request_id, self.cid)
            await self._cancel(answer, "timeout")
            await self._give_up(fallback.REASON_TIMEOUT)
        elif answer.started_at is not None and (
                now >= answer.last_event_at + cfg["STALL_TIMEOUT_SECONDS"]):
            log.warning("worker silent for %.0f s on %s: presumed dead; %s gets the fallback",
                        now - answer.last_event_at, answer.request_id, self.cid)
            await self._cancel(answer, "stalled")
            await self._give_up(fallback.REASON_WORKER_LOST)
        elif answer.started_at is None and now >= answer.next_presence_check:
            answer.next_presence_check = now + settings.INFERENCE["WORKER_TTL_SECONDS"] / 2
            try:
                live = await pool.live_workers(get_redis())
            except _REDIS_ERRORS:
                live = 1  # cannot tell: the first-token deadline still holds
            if live == 0:
                log.warning("no live worker for queued %s; %s gets the fallback",
                            answer.request_id, self.cid)
                await self._cancel(answer, "no_worker")
                await self._give_up(fallback.REASON_UNAVAILABLE)
        if now >= self._next_tick:
            self._next_tick = now + cfg["PARTIAL_SAVE_SECONDS"]
            self._tick(answer)

    def _tick(self, answer: _Answer) -> None:
        """Keep the streamed text saved (the claim is kept alive by _renew_claims)."""
        if answer.message is not None and not answer.finished and len(
                answer.text) != answer.saved_chars:
            text = answer.text
            _save_partial_soon(answer.message.pk, text)
            answer.saved_chars = len(text)

    # --- events --------------------------------------------------------------------------------

    async def _on_event(self, answer: _Answer, event: dict) -> None:
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
            await self._on_join(answer, event["channel"], event.get("kind", CUSTOMER),
                                event.get("message_id"))
        elif kind == "answer.leave":
            self.audience.pop(event["channel"], None)
            if CUSTOMER not in self.audience.values():
                if event.get("now"):  # nobody to wait for: the grace period is over already
                    self.alone_since = time.monotonic() - settings.CHAT["REJOIN_GRACE_SECONDS"]
                elif self.alone_since is None:
                    self.alone_since = time.monotonic()
        elif kind == "conv.status":
            self.conversation.status = event["status"]
            reason = {Conversation.Status.HUMAN: "takeover",
                      Conversation.Status.WAITING: "handoff",
                      Conversation.Status.CLOSED: "closed"}.get(event["status"])
            if reason is not None:
                await self._stop(answer, reason)
                self.ended = True

    async def _on_join(self, answer: _Answer, channel: str, kind: str,
                       left_out: int | None = None) -> None:
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
        await self._deliver_to(channel, kind, frames.bot_start_frame(
            message_id=message.pk, reply_to=answer.question.pk))
        if answer.text:
            await self._deliver_to(channel, kind, frames.bot_delta_frame(
                message_id=message.pk, text=answer.text))
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

    async def _serve_late_joins(self, answer: _Answer) -> None:
        for event in self._late_joins():
            await self._on_join(answer, event["channel"], event.get("kind", CUSTOMER),
                                event.get("message_id"))

    async def _on_start(self, answer: _Answer, event: dict) -> None:
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
                conversation=self.conversation, model_name=event.get("model", ""))
        except services.BotSilenced:
            # A human took the conversation between the request and its first token.
            await self._cancel(answer, "silenced")
            metrics.answer_ended(metrics.TAKEN_OVER, "silenced")
            answer.finished = self.ended = True
            return
        await self._update_claim()  # late joiners now learn which message streams
        await self._emit(frames.bot_start_frame(message_id=answer.message.pk,
                                                reply_to=answer.question.pk))
        if answer.prefix:
            # The product's apology streams first, before the model has said a word.
            answer.parts.append(answer.prefix)
            await self._emit(frames.bot_delta_frame(message_id=answer.message.pk,
                                                    text=answer.prefix))

    async def _on_delta(self, answer: _Answer, event: dict) -> None:
        await self._on_start(answer, event)  # tolerate a lost start
        if answer.finished:
            return
        text = event.get("text", "")
        if answer.first_token_at is None and text:
            answer.first_token_at = time.monotonic()
            metrics.FIRST_TOKEN.observe(answer.first_token_at - answer.sent_at)
        if answer.punctuation is not None:
            text = answer.punctuation.feed(text)
        if text:
            answer.parts.append(text)
            await self._emit(frames.bot_delta_frame(message_id=answer.message.pk, text=text))

    async def _on_done(self, answer: _Answer, event: dict) -> None:
        await self._on_start(answer, event)
        if answer.finished:
            return
        answer.trimmed = int(event.get("trimmed") or 0)
        answer.passages = int(event.get("passages") or 0)
        finish_reason = str(event.get("finish_reason") or "stop")
        limited = bool(answer.stream_guards and (answer.stream_guards["max_words"]
                                                 or answer.stream_guards["max_han"]))
        if finish_reason == guards.REPETITION or (finish_reason == guards.LENGTH and limited):
            answer.guards.append(finish_reason)
            metrics.guarded(finish_reason)
        kept = event.get("text")
        if isinstance(kept, str):
            # The worker cut a loop or an overrun back to a sentence: show what it kept.
            await self._replace_text(answer, self._punctuated(answer, kept))
        if answer.guarded and await self._broke_a_rule(answer):
            return  # asked again: the second answer streams in place of this one
        metrics.model_answered(finish_reason, time.monotonic() - answer.sent_at)
        await self._finish(
            answer, finish_reason=finish_reason,
            partial=finish_reason not in ("stop", guards.LENGTH, guards.REPETITION),
            prompt_tokens=event.get("prompt_tokens"),
            completion_tokens=event.get("completion_tokens"),
        )

    # --- guards (chat/guards.py) ------------------------------------------------------------

    def _model_text(self, answer: _Answer) -> str:
        return answer.text[len(answer.prefix):]

    def _punctuated(self, answer: _Answer, text: str) -> str:
        if answer.punctuation is None:
            return text
        answer.punctuation = FullwidthPunctuation()
        return answer.punctuation.feed(text) + answer.punctuation.finish()

    async def _replace_text(self, answer: _Answer, model_text: str) -> None:
        """What the answer's message shows becomes the product's prefix and `model_text`."""
        answer.parts = [answer.prefix + model_text] if answer.prefix + model_text else []
        await self._emit(frames.bot_start_frame(message_id=answer.message.pk,
                                                reply_to=answer.question.pk, replace=True))
        if answer.parts:
            await self._emit(frames.bot_delta_frame(message_id=answer.message.pk,
                                                    text=answer.text))

    async def _broke_a_rule(self, answer: _Answer) -> bool:
        """An answer in the wrong script, one that only repeats the question, or one with
        nothing left to say: asked again once with the rule restated (True), then replaced by
        the localised fallback. The rules every answer ends with follow (_closing_words)."""
        await self._emit_all(self._flush_held_text(answer))
        language = self.conversation.language
        model_text = self._model_text(answer)
        broken = (guards.LANGUAGE if guards.wrong_language(model_text, language)
                  else guards.ECHO if guards.is_echo(model_text, answer.question.text)
                  else None)
        if broken is None and model_text.strip():
            await self._closing_words(answer)
            return False
        if broken is not None:
            answer.guards.append(broken)
            metrics.guarded(broken)
            if not answer.retried:
                try:
                    await self._ask_again(answer, broken)
                    return True
                except (ChannelFull, *_REDIS_ERRORS) as exc:
                    log.warning("could not ask again for %s (%s)", self.cid,
                                exc.__class__.__name__)
        answer.fallback = True
        await self._replace_text(answer, await db(_fallback_text)(
            self.conversation, answer.question))
        return False

    async def _ask_again(self, answer: _Answer, broken: str) -> None:
        language = self.conversation.language
        rule = guards.restated("restate_language" if broken == guards.LANGUAGE
                               else "restate_echo", language, language_name(language))
        system, *turns = answer.prompt
        last = turns[-1] if turns else None
        answer.prompt = [{**system, "content": f"{system['content']}\n\n{rule}"}, *turns[:-1]]
        if last is not None:
            answer.prompt.append({**last, "content": f"{last['content']}\n\n({rule})"})
        answer.retried = True
        answer.request_id = uuid.uuid4().hex
        answer.started_at = None
        answer.next_presence_check = (time.monotonic()
                                      + settings.INFERENCE["WORKER_TTL_SECONDS"] / 2)
        answer.punctuation = FullwidthPunctuation() if answer.punctuation else None
        room, queue_limit = await self._room()
        if room.live == 0 or room.queued >= queue_limit:
            raise ChannelFull
        await self._replace_text(answer, "")
        await self._dispatch(answer, queue_limit)

    async def _closing_words(self, answer: _Answer) -> None:
        """What the product adds after the model's last word, when the model left it out: the
        offer of a human after a complaint, the question for the order number."""
        language, model_text, more = self.conversation.language, self._model_text(answer), []
        if answer.complaint:
            answer.guards.append(guards.COMPLAINT)
            metrics.guarded(guards.COMPLAINT)
            answer.offer_human = True
            if not guards.offers_human(model_text):
                more.append(guards.text("offer_human", language))
        if answer.ask_details and not guards.asks_for_details(model_text):
            answer.guards.append(guards.ASK_DETAILS)
            metrics.guarded(guards.ASK_DETAILS)
            more.append(guards.text(guards.ASK_DETAILS, language))
        if more:
            glue = _glue(language)
            addition = ("" if answer.text[-1:].isspace() else glue) + glue.join(more)
            answer.parts.append(addition)
            await self._emit(frames.bot_delta_frame(message_id=answer.message.pk,
                                                    text=addition))

    async def _guarded(self, answer: _Answer, text: str, shaped_by: tuple[str, ...], *,
                       offer_human: bool = False) -> None:
        """The product answers in its own words, without the model (a question no
        help-centre article covers); its finish reason is the last guard of `shaped_by`."""
        answer.finished = True
        guard = shaped_by[-1]
        try:
            message = await db(services.bot_message_guarded)(
                conversation=self.conversation, text=text, guards=shaped_by)
        except services.BotSilenced:
            metrics.answer_ended(metrics.TAKEN_OVER, "silenced")
            self.ended = True
            return
        for name in shaped_by:
            metrics.guarded(name)
        metrics.answer_ended(metrics.GUARDED, guard)
        await self._emit(frames.bot_start_frame(message_id=message.pk,
                                                reply_to=answer.question.pk))
        await self._emit(frames.bot_delta_frame(message_id=message.pk, text=message.text))
        answer.done_frame = frames.bot_done_frame(
            message_id=message.pk, usage={"prompt_tokens": 0, "completion_tokens": 0},
            ttft_ms=None, total_ms=0, finish_reason=guard, fallback=False, partial=False,
            guards=shaped_by, offer_human=offer_human,
        )
        await self._emit(answer.done_frame)
        await memory.remember(message)

    async def _on_error(self, answer: _Answer, event: dict) -> None:
        log.warning("worker error for %s: %s %s", answer.request_id, event.get("code"),
                    event.get("message"))
        reason = (fallback.REASON_BUSY
                  if event.get("code") == protocol.InferenceErrorCode.OVERLOADED
                  else fallback.REASON_ERROR)
        await self._give_up(reason)

    # --- endings -------------------------------------------------------------------------------

    async def _stop(self, answer: _Answer, reason: str) -> None:
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

    async def _cancel(self, answer: _Answer, reason: str) -> None:
        with contextlib.suppress(ChannelFull, *_REDIS_ERRORS):
            await self.layer.group_send(
                settings.INFERENCE["CONTROL_GROUP"],
                protocol.inference_cancel(request_id=answer.request_id, reason=reason),
            )

    async def _finish(self, answer: _Answer, *, finish_reason: str, partial: bool,
                      prompt_tokens=None, completion_tokens=None) -> None:
        answer.finished = True
        await self._emit_all(self._flush_held_text(answer))
        if answer.fallback and answer.guards:
            finish_reason = answer.guards[-1]  # the rule the answers broke
        message = await self._store(answer, finish_reason=finish_reason, partial=partial,
                                    prompt_tokens=prompt_tokens,
                                    completion_tokens=completion_tokens)
        answer.done_frame = frames.bot_done_frame(
            message_id=message.pk,
            usage={"prompt_tokens": message.prompt_tokens or 0,
                   "completion_tokens": message.completion_tokens or 0},
            ttft_ms=message.ttft_ms, total_ms=message.total_ms or 0,
            finish_reason=finish_reason, fallback=answer.fallback, partial=partial,
            sources=message.sources, guards=tuple(answer.guards),
            offer_human=answer.offer_human,
        )
        await self._emit(answer.done_frame)
        await memory.remember(message)

    async def _give_up(self, reason: str) -> None:
        """Keep any partial answer, then let the fallback rules answer."""
        answer = self.answer
        if answer.message is not None and not answer.finished:
            await self._finish(answer, finish_reason=reason, partial=True)
        await self._fallback(answer, reason)

    async def _fallback(self, answer: _Answer, reason: str) -> None:
        answer.finished = True
        try:
            message = await db(_store_fallback)(
                self.conversation, answer.question, reason)
        except services.BotSilenced:
            metrics.answer_ended(metrics.TAKEN_OVER, "silenced")
            self.ended = True
            return  # a human holds the conversation: the fallback stays silent too
        metrics.answer_ended(metrics.FALLBACK, reason)
        await self._emit(frames.bot_start_frame(message_id=message.pk,
                                                reply_to=answer.question.pk))
        await self._emit(frames.bot_delta_frame(message_id=message.pk, text=message.text))
        await self._emit(frames.bot_done_frame(
            message_id=message.pk, usage={"prompt_tokens": 0, "completion_tokens": 0},
            ttft_ms=None, total_ms=0, finish_reason=reason, fallback=True, partial=False,
        ))
        await memory.remember(message)

    def _flush_held_text(self, answer: _Answer, *, send: bool = True) -> list[dict]:
        """Text the punctuation pass held back, waiting for what follows: the answer ended."""
        if answer.punctuation is None or answer.message is None:
            return []
        text = answer.punctuation.finish()
        if not text:
            return []
        answer.parts.append(text)
        return [frames.bot_delta_frame(message_id=answer.message.pk, text=text)] if send else []

    async def _store(self, answer: _Answer, *, finish_reason: str, partial: bool,
                     prompt_tokens=None, completion_tokens=None) -> Message:
        now = time.monotonic()
        ttft_ms = (None if answer.first_token_at is None
                   else round((answer.first_token_at - answer.sent_at) * 1000))
        # What the model saw: the system prompt with the passages the worker kept, and the
        # turns it kept.
        prompt, sources = None, []
        if answer.prompt:
            grounded = answer.grounded
            system = {**answer.prompt[0], "content": protocol.grounded_system(
                answer.prompt[0]["content"], grounded.grounding, answer.passages)}
            prompt = [system, *answer.prompt[1 + answer.trimmed:]]
            sources = grounded.sources_of(answer.passages)
        _unsaved.pop(answer.message.pk, None)  # the whole text is stored now
        return await db(services.bot_message_finish)(
            message=answer.message, text=answer.text, finish_reason=finish_reason,
            partial=partial, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            ttft_ms=ttft_ms, total_ms=round((now - answer.sent_at) * 1000), prompt=prompt,
            sources=sources, guards=tuple(answer.guards), fallback=answer.fallback,
        )

    # --- delivery ------------------------------------------------------------------------------

    async def _emit_all(self, frames: list[dict]) -> None:
        for frame in frames:
            await self._emit(frame)

    async def _emit(self, frame: dict) -> None:
        for channel, kind in list(self.audience.items()):
            await self._deliver_to(channel, kind, frame)

    async def _deliver_to(self, channel: str, kind: str, frame: dict) -> None:
        event = (group_events.answer_frame(frame=frame) if kind == CUSTOMER
                 else group_events.conv_bot(conversation_id=self.cid, frame=frame))
        consumer = _sockets.get(channel)
        try:
            if consumer is not None:
                await getattr(consumer, event["type"].replace(".", "_"))(event)
            else:
                await self.layer.send(channel, event)
        except ChannelFull:
            log.warning("socket %s of %s is not reading; it leaves the audience", channel,
                        self.cid)
            self.audience.pop(channel, None)
        except Exception:  # one broken socket must not end the answer for everyone
            log.warning("could not send %s to %s", frame["type"], channel, exc_info=True)
            self.audience.pop(channel, None)


async def cancel_and_wait(task: asyncio.Task) -> None:
    """Cancel `task` and wait until it has ended. A channel-layer receive can lose one
    cancellation (redis-py's read timeout turns a cancel that coincides with it into a timeout,
    and channels-redis then reads again), so cancel again until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)


def _fallback_text(conversation: Conversation, question: Message) -> str:
    return fallback.choose_answer(fallback.load_rules(), text=question.text,
                                  language=conversation.language)


def _store_fallback(conversation: Conversation, question: Message, reason: str) -> Message:
    return services.bot_message_fallback(
        conversation=conversation, text=_fallback_text(conversation, question), reason=reason)


def _glue(language: str) -> str:
    """What goes between two sentences: a space, but none in Chinese."""
    return "" if (language or "").lower().startswith("zh") else " "


def _joined(*sentences: str, language: str) -> str:
    return _glue(language).join(s.strip() for s in sentences if s.strip())
