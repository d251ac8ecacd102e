"""How many calls the bot may make: ACTIONS_MAX_CALLS_PER_ANSWER within one answer, and
ACTIONS_MAX_CALLS_PER_CONVERSATION_HOUR within any hour of one conversation.

The answer's count is the answer run's own (an `AnswerCalls` it keeps for the answer and
passes to every check); the conversation's lives in Redis, with the chat limits' machinery
(`chat.limits.ChatLimits`: the `limits` library's moving window), so it holds across
processes, reconnects and answers. Like every chat limit it stands aside while Redis cannot
be reached; the per-answer count still holds then, so a conversation makes at most that many
calls per question.

Ask before each call, and call only when nothing is returned:

    answer_calls = AnswerCalls()  # one per answer
    refusal = await limits.check_call(action, conversation_id=conv.id, answer=answer_calls)
    outcome = refusal or await calling.call(action, arguments, customer_id=...)
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

from django.conf import settings

from chat import metrics
from chat.actions.models import Action
from chat.actions.outcome import REFUSED, Outcome, refused
from chat.limits import ChatLimits, Refusal


@dataclass
class AnswerCalls:
    """The calls one answer has been allowed so far."""

    made: int = 0


class ActionLimits(ChatLimits):
    """The conversation's hourly count, on the same Redis and with the same failure handling
    as the chat limits (one instance per event loop, as there)."""

    async def check_conversation(self, *, conversation_id: str) -> Refusal | None:
        per_hour = settings.ACTIONS["MAX_CALLS_PER_CONVERSATION_HOUR"]
        if per_hour <= 0:
            return None
        return await self._check(
            (
                "action_conversation",
                f"{per_hour}/hour",
                ("conversation", str(conversation_id)),
                "This conversation has made too many lookups; try again in {wait}.",
            ),
            namespace="action",
        )


async def check_call(
    action: Action, *, conversation_id: object, answer: AnswerCalls
) -> Outcome | None:
    """None when one more call of `action` is allowed (and then counted), else the refused
    Outcome to record and show. The answer's own limit is asked first: a call it refuses does
    not use up the conversation's hour."""
    limit = settings.ACTIONS["MAX_CALLS_PER_ANSWER"]
    if limit > 0 and answer.made >= limit:
        return _refused(action, "limit_answer", f"this answer has made its {limit} calls")
    refusal = await _limits().check_conversation(conversation_id=str(conversation_id))
    if refusal is not None:
        return _refused(action, "limit_conversation", refusal.message)
    answer.made += 1
    return None


def _refused(action: Action, reason: str, detail: str) -> Outcome:
    metrics.action_called(action.name, REFUSED, None)
    return refused(reason, detail)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ActionLimits] = (
    weakref.WeakKeyDictionary()
)


def _limits() -> ActionLimits:
    loop = asyncio.get_running_loop()
    current = _per_loop.get(loop)
    if current is None or current.redis_url != settings.REDIS_URL:
        current = _per_loop[loop] = ActionLimits(settings.REDIS_URL)
    return current


async def close() -> None:
    """Close this event loop's Redis connections (tests, management commands)."""
    current = _per_loop.pop(asyncio.get_running_loop(), None)
    if current is not None:
        await current.aclose()
