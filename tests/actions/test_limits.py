"""How many calls the bot may make: per answer (its own count) and per conversation hour (in
Redis, shared by every process), refused calls counted and recorded as refused."""

import asyncio

from chat.actions import limits
from chat.actions.limits import ActionLimits, AnswerCalls
from tests.actions.helpers import make_action
from tests.waiting import sample

ACTION = make_action(name="limit_probe")


def refused_calls() -> float:
    return sample("cs_chat_action_calls_total", action="limit_probe", outcome="refused")


async def test_an_answer_makes_at_most_its_calls(actions_settings):
    actions_settings(MAX_CALLS_PER_ANSWER=3, MAX_CALLS_PER_CONVERSATION_HOUR=20)
    before = refused_calls()
    answer = AnswerCalls()
    allowed = [
        await limits.check_call(ACTION, conversation_id="conv-1", answer=answer) for _ in range(3)
    ]
    assert allowed == [None, None, None]
    fourth = await limits.check_call(ACTION, conversation_id="conv-1", answer=answer)
    assert (fourth.status, fourth.reason) == ("refused", "limit_answer")
    assert "I can't look anything else up" in fourth.customer_text("en")
    assert refused_calls() - before == 1
    # The next answer starts afresh.
    assert await limits.check_call(ACTION, conversation_id="conv-1", answer=AnswerCalls()) is None


async def test_a_conversation_makes_at_most_its_calls_an_hour_across_answers(actions_settings):
    actions_settings(MAX_CALLS_PER_ANSWER=3, MAX_CALLS_PER_CONVERSATION_HOUR=4)
    results = []
    for _ in range(3):  # three answers of two calls each
        answer = AnswerCalls()
        for _ in range(2):
            results.append(await limits.check_call(ACTION, conversation_id="conv-2", answer=answer))
    assert results[:4] == [None] * 4
    assert [r.reason for r in results[4:]] == ["limit_conversation", "limit_conversation"]
    assert "try again in" in results[4].detail
    # Another conversation has its own hour.
    assert await limits.check_call(ACTION, conversation_id="conv-3", answer=AnswerCalls()) is None


async def test_an_answer_refused_by_its_own_limit_does_not_use_the_conversations_hour(
    actions_settings,
):
    actions_settings(MAX_CALLS_PER_ANSWER=1, MAX_CALLS_PER_CONVERSATION_HOUR=2)
    answer = AnswerCalls()
    assert await limits.check_call(ACTION, conversation_id="conv-4", answer=answer) is None
    for _ in range(5):
        assert (
            await limits.check_call(ACTION, conversation_id="conv-4", answer=answer)
        ).reason == "limit_answer"
    assert await limits.check_call(ACTION, conversation_id="conv-4", answer=AnswerCalls()) is None


async def test_the_hourly_count_is_shared_by_processes(actions_settings, redis_server):
    actions_settings(MAX_CALLS_PER_CONVERSATION_HOUR=2)

    async def other_process():
        own = ActionLimits(redis_server.url)
        try:
            return [await own.check_conversation(conversation_id="conv-5") for _ in range(2)]
        finally:
            await own.aclose()

    assert await asyncio.to_thread(asyncio.run, other_process()) == [None, None]
    refusal = await limits.check_call(ACTION, conversation_id="conv-5", answer=AnswerCalls())
    assert refusal.reason == "limit_conversation"


async def test_zero_turns_a_limit_off(actions_settings):
    actions_settings(MAX_CALLS_PER_ANSWER=0, MAX_CALLS_PER_CONVERSATION_HOUR=0)
    answer = AnswerCalls()
    for _ in range(30):
        assert await limits.check_call(ACTION, conversation_id="conv-6", answer=answer) is None
    assert answer.made == 30
