"""Asking the question set through the live answer path, as a customer's back end would.

Each case is a fresh conversation in its language, and each turn goes through
`chat.turns.customer_says` with an `AnswerListener` in the conversation's audience, exactly as
the chat API's `POST /api/v1/chat` does: retrieval, the bot profile's prompt, the worker, the
guards and the fallback are all the product's own. The conversations are stored on the
playground channel: like the staff playground's, they are the bot being tried, so they stay out
of the inbox, the reports and the fine-tuning export, and remain in admin for review
(metadata "scorecard").
"""

import asyncio
import contextlib
import time
from collections.abc import Callable

from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from chat import answering, fallback, limits, services, turns
from chat.api.listening import AnswerListener
from chat.models import Conversation, Site
from chat.scorecard import scoring
from chat.scorecard.questions import Case
from chat.scorecard.records import ANSWERED, HANDOFF, NO_ANSWER, SILENT, Answer, CaseResult
from inference_worker import pool
from runtime import broadcast
from runtime.aio import db
from runtime.redis_client import get_redis

# Finish reasons of an answer the model could not give: no worker, a deadline, an error,
# overload. The answer may have started (an empty or partial message ends with the reason, and
# the fallback rules' answer follows as a message of its own); a guard's own replacement names
# the guard instead, and is scored like any text.
MODEL_FAILED_REASONS = frozenset(
    {
        fallback.REASON_UNAVAILABLE,
        fallback.REASON_TIMEOUT,
        fallback.REASON_ERROR,
        fallback.REASON_BUSY,
        fallback.REASON_WORKER_LOST,
    }
)
# A follow-up is sent once the previous answer has let go of the conversation, as the chat
# API would have a client do; longer than the API's own wait, since nobody is in a hurry.
_ANSWER_END_WAIT_SECONDS = 10.0
_REDIS_ERRORS = (RedisError, OSError)
# How long the workers may look gone (no heartbeat) before the run stops.
_WORKER_RETURN_SECONDS = 15.0

Progress = Callable[[CaseResult, int, int], None]  # (result, cases done, cases in all)


class NoWorker(Exception):
    """No inference worker is live: every answer would be the fallback's."""


class WorkerLost(Exception):
    """The workers went away during the run (answers came back "unavailable")."""

    def __init__(self, done: int, total: int):
        super().__init__(f"the inference worker went away after {done} of {total} cases")
        self.done = done
        self.total = total


async def live_workers() -> int:
    """Workers with a fresh heartbeat. Raises RedisError/OSError when Redis cannot be reached."""
    return await pool.live_workers(get_redis())


async def evaluate(
    cases: list[Case],
    *,
    site: Site | None,
    concurrency: int,
    length_limits: scoring.LengthLimits,
    run_id: str = "",
    progress: Progress | None = None,
) -> list[CaseResult]:
    """Every case asked (`concurrency` at once) and scored, in the order given. Raises
    NoWorker before asking anything when no worker is live, WorkerLost when they went away
    meanwhile (the cases after that are not asked)."""
    try:
        if await live_workers() == 0:
            raise NoWorker
        results: list[CaseResult | None] = [None] * len(cases)
        gate = asyncio.Semaphore(max(1, concurrency))
        lost = asyncio.Event()
        done = 0

        async def one(index: int, case: Case) -> None:
            nonlocal done
            async with gate:
                if lost.is_set():
                    return
                result = await run_case(case, site=site, run_id=run_id)
                result.score = scoring.score_case(case, result.answers, length_limits)
                results[index] = result
                done += 1
                if (
                    any(a.finish_reason == fallback.REASON_UNAVAILABLE for a in result.answers)
                    and not await _workers_back()
                ):
                    lost.set()
                if progress is not None:
                    progress(result, done, len(cases))

        await asyncio.gather(*(one(i, case) for i, case in enumerate(cases)))
        if lost.is_set():
            raise WorkerLost(done, len(cases))
        return [r for r in results if r is not None]
    finally:
        await _settle()


async def _workers_back(wait: float = _WORKER_RETURN_SECONDS) -> bool:
    """Whether a worker is live again within `wait` seconds. A worker busy on two cores can
    miss a heartbeat and look gone for a moment: that answer is scored as the fallback it
    was, but only a worker still gone stops the run."""
    deadline = time.monotonic() + wait
    while True:
        with contextlib.suppress(*_REDIS_ERRORS):
            if await live_workers():
                return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.5)


async def run_case(case: Case, *, site: Site | None, run_id: str = "") -> CaseResult:
    """One case in a conversation of its own: its turns in order, each after the previous
    answer. Stops at a turn the bot did not answer (the later ones would not be either)."""
    conversation, _token = await db(services.conversation_start)(
        site=site,
        language=case.language,
        channel=Conversation.Channel.PLAYGROUND,
        metadata={"scorecard": {"run": run_id, "case": case.id}},
    )
    result = CaseResult(case=case, answers=[], conversation_id=str(conversation.pk))
    for number, text in enumerate(case.turns):
        if number:
            await answering.answer_ended(conversation.pk, wait=_ANSWER_END_WAIT_SECONDS)
        answer = await ask(conversation, text)
        result.answers.append(answer)
        if answer.outcome != ANSWERED:
            break
    return result


async def ask(conversation: Conversation, text: str) -> Answer:
    """One customer message and the answer the customer reads, as the chat API gets it."""
    listener = await AnswerListener(conversation).open()
    try:
        sent = time.monotonic()
        turn = await turns.customer_says(
            conversation=conversation, text=text, client_id=None, channel_name=listener.channel_name
        )
        if turn.outcome == turns.Outcome.HANDOFF:
            return Answer(question=text, outcome=HANDOFF)
        if turn.outcome != turns.Outcome.ANSWERING:
            return Answer(question=text, outcome=SILENT)
        return await _read(listener, turn.message.pk, Answer(question=text), sent)
    finally:
        await listener.close()


async def _read(listener: AnswerListener, question_id: int, answer: Answer, sent: float) -> Answer:
    parts: list[str] = []
    done = None
    async for frame in listener.answer(question_id):
        kind = frame["type"]
        if kind == "bot.start":
            answer.message_id = frame["message_id"]
            if frame.get("replace"):
                parts.clear()  # a guard changed what was shown: the deltas that follow are all
        elif kind == "bot.delta":
            if frame["text"] and answer.first_text_ms is None:
                answer.first_text_ms = round((time.monotonic() - sent) * 1000, 1)
            parts.append(frame["text"])
        elif kind == "bot.done":
            done = frame
        elif kind == "status":
            answer.outcome = SILENT
        elif kind == "error":
            answer.outcome = NO_ANSWER
    answer.text = "".join(parts)
    answer.wall_ms = round((time.monotonic() - sent) * 1000, 1)
    if done is None:
        if answer.outcome == ANSWERED:
            answer.outcome = NO_ANSWER
        return answer
    answer.finish_reason = done.get("finish_reason")
    answer.fallback = bool(done.get("fallback"))
    answer.model_failed = answer.finish_reason in MODEL_FAILED_REASONS
    answer.offer_human = bool(done.get("offer_human"))
    answer.guards = list(done.get("guards") or [])
    answer.partial = bool(done.get("partial"))
    answer.ttft_ms = done.get("ttft_ms")
    answer.total_ms = done.get("total_ms")
    answer.sources = [s.get("title", "") for s in done.get("sources") or []]
    return answer


async def _settle() -> None:
    """Let the answers' own tasks end (claims released, partial saves, console events sent)
    and close this event loop's connections, so the loop closes cleanly."""
    pending = [task for task in answering.tasks if not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=10)
    with contextlib.suppress(*_REDIS_ERRORS, TimeoutError):
        await asyncio.wait_for(broadcast.flush(), 5)
    with contextlib.suppress(*_REDIS_ERRORS):
        await limits.close()
    with contextlib.suppress(*_REDIS_ERRORS):
        await get_redis().aclose()
    with contextlib.suppress(*_REDIS_ERRORS):
        await get_channel_layer().close_pools()
