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

This module holds what consumers, views and commands call. The parts:

- `run`: AnswerRun (life cycle, deadlines, audience, delivery), with its parts by concern in
  `requesting` (asking the workers), `streaming` (the worker's events), `guarding` (the
  product's guards), `acting` (the company's back end called for the customer, and the
  customer's confirmation: confirm_call, cancel_call), `proposing` (the actions offered to the
  model as tools, and the product's decision on the calls it proposes) and `endings`
  (stopping, finishing, the fallback, storing); `answer`: the
  state of the answer under way; `inbox`: a run's events;
- `claims`: the claim in Redis, its renewal, and whether its owner is gone; `resuming`: a
  resumed socket taking over from a run whose process died; `partials`: saving streamed text;
- `prompt`: the system prompt, turns and sampling an answer is asked with (AnswerOptions,
  with the functions an API caller offers in ToolOffer);
- `audience`: the sockets that show answers (a Protocol), and how a frame reaches one;
- `registry`: this process's runs and their tasks.
"""

import asyncio
import contextlib
import time

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from chat import group_events, selectors
from chat.answering import claims, registry, resuming
from chat.answering.acting import call_frame, cancel_call, confirm_call
from chat.answering.audience import (
    CONSOLE,
    CUSTOMER,
    Audience,
    ConsoleAudience,
    CustomerAudience,
    register_socket,
    unregister_socket,
)
from chat.answering.prompt import AnswerContext, AnswerOptions, ToolOffer, build_messages
from chat.answering.registry import tasks
from chat.answering.run import AnswerRun
from chat.models import Conversation, Message
from runtime import broadcast
from runtime.aio import db

__all__ = [
    "ANSWER_END_WAIT_SECONDS",
    "CONSOLE",
    "CUSTOMER",
    "AnswerOptions",
    "AnswerContext",
    "AnswerRun",
    "Audience",
    "ConsoleAudience",
    "CustomerAudience",
    "ToolOffer",
    "answer_ended",
    "answers_here",
    "build_messages",
    "call_frame",
    "cancel_call",
    "confirm_call",
    "join",
    "leave",
    "live_answer",
    "persist_all",
    "register_socket",
    "request_answer",
    "tasks",
    "unregister_socket",
    "watch_resumed",
]

_REDIS_ERRORS = (RedisError, OSError)


async def live_answer(conversation_id) -> dict | None:
    """The claim of the answer under way in this conversation, if any, in any process:
    {"channel": run's channel, "message_id": the bot message being streamed or None}."""
    run = registry.runs.get(str(conversation_id))
    if run is not None:
        return run.claim_value()
    return await claims.read(conversation_id)


# How long a next question may wait for the previous answer to end: a client that sends it
# the moment it has that answer's bot.done would otherwise be told an answer is under way.
ANSWER_END_WAIT_SECONDS = 2.0


async def answer_ended(conversation_id, wait: float = ANSWER_END_WAIT_SECONDS) -> bool:
    """Whether no answer is under way in the conversation, waiting up to `wait` seconds for
    one that is ending: its run sends bot.done first and lets go of the conversation only
    after looking for a newer question (a database query, when someone asked meanwhile), some
    milliseconds later."""
    deadline = time.monotonic() + wait
    while await live_answer(conversation_id) is not None:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def join(
    conversation_id,
    channel_name: str,
    kind: str,
    *,
    claim: dict | None = None,
    left_out: int | None = None,
) -> None:
    """Show this socket the answer under way, if any: the text so far, then the rest.
    `left_out`: the streaming answer the socket's history did not show (see answer_join)."""
    claim = claim or await live_answer(conversation_id)
    if claim is not None:
        await _tell_run(
            claim["channel"],
            group_events.answer_join(channel=channel_name, kind=kind, message_id=left_out),
        )


def watch_resumed(
    conversation: Conversation, claim: dict, channel_name: str
) -> asyncio.Task | None:
    """After a resumed socket joined the answer under way (`claim`): if that answer's run is
    in another process, make sure it is alive, and take over if it is not (resuming.py).
    Returns the watching task (the socket cancels it when it closes), None for a run of this
    process, which is alive by being here."""
    if registry.runs.get(str(conversation.pk)) is not None:
        return None
    return registry.spawn(_take_over_if_gone(conversation, claim, channel_name))


async def _take_over_if_gone(conversation: Conversation, claim: dict, channel_name: str) -> None:
    if not await claims.owner_gone(conversation.pk, claim["channel"]):
        return
    await resuming.close_dead_answer(conversation.pk, claim.get("message_id"), channel_name)
    question = await db(selectors.question_owed)(conversation_id=conversation.pk)
    if question is not None:
        await request_answer(
            conversation=conversation, question=question, channel_name=channel_name
        )


async def leave(conversation_id, channel_name: str, *, now: bool = False) -> None:
    """This socket no longer shows the conversation. `now`: the customer will not come back
    on it (see answer_leave)."""
    event = group_events.answer_leave(channel=channel_name, now=now)
    run = registry.runs.get(str(conversation_id))
    if run is not None:
        run.post(event)
        return
    claim = await live_answer(conversation_id)
    if claim is not None:
        await _tell_run(claim["channel"], event)


def answers_here(conversation_id) -> bool:
    """Whether a run of this process answers the conversation now (a new question then waits
    for it, and reads nothing ahead for its request)."""
    return str(conversation_id) in registry.runs


async def request_answer(
    *,
    conversation: Conversation,
    question: Message,
    channel_name: str,
    options: AnswerOptions | None = None,
    context: AnswerContext | None = None,
) -> None:
    """Make sure the bot answers `question` (and anything the customer adds meanwhile), once.

    If this process already answers the conversation, its run picks the question up when the
    answer under way ends; if another process does, that one will (our failed claim marks the
    conversation asked, and it looks for newer questions after releasing its claim) with the
    profile's options. Otherwise this process
    claims it and answers. `context`: what the answer reads from the database, read already
    in the hop that stored the question.
    """
    cid = str(conversation.pk)
    run = registry.runs.get(cid)
    if run is not None:
        run.hand(question, channel_name, options)
        return
    run = AnswerRun(conversation, channel_name)
    if not await run.claim():
        await join(cid, channel_name, CUSTOMER)
        return
    if options is not None:
        run.options[question.pk] = options
    if context is not None:
        run.contexts[question.pk] = context
    run.launch(question)


async def _tell_run(run_channel: str, event: dict) -> None:
    run = next((r for r in registry.runs.values() if r.channel == run_channel), None)
    if run is not None:
        run.post(event)
        return
    with contextlib.suppress(ChannelFull, *_REDIS_ERRORS):
        await get_channel_layer().send(run_channel, event)


async def persist_all(reason: str = "interrupted") -> None:
    """Save what every run of this process has streamed so far (the process is stopping).
    Daphne cancels every connection's consumer on SIGTERM and waits for them: the consumers
    call this then, so history after a restart shows what the customer saw, flagged partial,
    and the question is not answered twice."""
    runs = list(registry.runs.values())
    await asyncio.gather(*(run.interrupt(reason) for run in runs), return_exceptions=True)
    # Let each run release its claim before the process goes: a reload on the restarted
    # process then sees no answer under way and shows the saved text at once.
    ending = [run.task for run in runs if run.task is not None and not run.task.done()]
    if ending:
        await asyncio.wait(ending, timeout=2)
    # The events those endings caused (agents' views) leave before the process does.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(broadcast.flush(), 2)
