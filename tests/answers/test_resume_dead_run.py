"""A socket that resumes while another process's run holds the conversation's claim
(chat/answering/resuming.py): if that process died (its claim runs out unrenewed) the resume
takes the question over and it is answered once; if it lives (it renews the claim) the resume
only joins. The other process is played by its claim in the real Redis; the resuming sockets go
through the real router, answered by a worker on the synthetic token source."""

import asyncio
import json

import pytest

from chat import answering, services
from chat.answering import claims
from chat.models import Conversation, Message
from runtime.aio import db
from runtime.redis_client import get_redis

pytestmark = pytest.mark.django_db(transaction=True)

DEAD_CHANNEL = "specific.gone!run"  # a run of a process that was killed
TTL = 1.0


@pytest.fixture(autouse=True)
def short_claims(settings):
    settings.CHAT = {**settings.CHAT, "ANSWER_CLAIM_TTL_SECONDS": TTL}


@pytest.fixture(autouse=True)
async def stop_runs():
    yield
    await answering.persist_all("test_over")


async def question_under_a_foreign_claim(connect, *, saved_text: str = "") -> tuple[dict, int]:
    """A question whose answer another process's run holds, with the bot message that run
    started (and the text its last partial save kept). The asking socket has left."""
    tab, first = await connect()
    cid = first["id"]
    await get_redis().set(claims.key(cid), json.dumps({"channel": DEAD_CHANNEL}), px=60_000)
    await tab.send({"type": "message", "text": "Where is my parcel?", "client_id": "q"})
    await tab.receive()  # message.ack: the claim was taken, so this process only joined
    conversation = await Conversation.objects.aget(pk=cid)
    message = await db(services.bot_message_start)(conversation=conversation, model_name="m")
    if saved_text:
        await db(services.bot_messages_save_partial)(texts={message.pk: saved_text})
    value = {"channel": DEAD_CHANNEL, "message_id": message.pk}
    await get_redis().set(claims.key(cid), json.dumps(value), px=int(TTL * 1000))
    await tab.close()
    return first, message.pk


def resume_query(first: dict) -> str:
    return f"conversation={first['id']}&token={first['token']}"


async def bot_messages(conversation_id) -> list[Message]:
    return [
        m
        async for m in Message.objects.filter(conversation_id=conversation_id, role="bot").order_by(
            "id"
        )
    ]


async def test_resumes_of_a_dead_run_take_the_question_over_and_answer_it_once(connect, worker):
    first, dead = await question_under_a_foreign_claim(connect)
    tabs = [(await connect(resume_query(first)))[0] for _ in range(2)]  # two tabs resume
    for tab in tabs:
        (history,) = await tab.receive_until(lambda f: f["type"] == "history")
        assert [m["role"] for m in history["messages"]] == ["customer"]  # nothing under way shown
    answers = [await tab.answer(timeout=TTL + 10) for tab in tabs]
    for frames in answers:
        done = frames[-1]
        assert done["fallback"] is False and done["finish_reason"] == "stop"
        assert [f["type"] for f in frames].count("bot.done") == 1
    assert answers[0][-1]["message_id"] == answers[1][-1]["message_id"]  # one answer, both tabs
    for tab in tabs:
        assert await tab.nothing_more(timeout=TTL + 0.5)  # and no second one later

    gone, answered = await bot_messages(first["id"])
    assert gone.pk == dead and gone.finish_reason == "interrupted" and gone.is_partial
    assert answered.pk == answers[0][-1]["message_id"]
    assert answered.text.startswith("Hello!") and not answered.is_partial


async def test_a_dead_runs_saved_text_is_shown_and_the_question_not_asked_again(connect, worker):
    first, dead = await question_under_a_foreign_claim(connect, saved_text="Your parcel is")
    tab, _ = await connect(resume_query(first))
    await tab.receive_until(lambda f: f["type"] == "history")
    start, delta, done = await tab.answer(timeout=TTL + 10)
    assert start["message_id"] == delta["message_id"] == done["message_id"] == dead
    assert delta["text"] == "Your parcel is"
    assert done["partial"] is True and done["finish_reason"] == "interrupted"
    assert await tab.nothing_more(timeout=TTL + 0.5)
    (kept,) = await bot_messages(first["id"])  # as after a restart: kept, flagged, not redone
    assert kept.text == "Your parcel is" and kept.finish_reason == "interrupted"


async def test_a_resume_leaves_a_live_run_of_another_process_alone(connect, worker):
    first, live = await question_under_a_foreign_claim(connect)
    key = claims.key(first["id"])

    async def renew() -> None:  # the other process, alive, renewing its claim
        while True:
            await get_redis().pexpire(key, int(TTL * 1000))
            await asyncio.sleep(TTL / 3)

    renewer = asyncio.create_task(renew())
    try:
        tab, _ = await connect(resume_query(first))
        await tab.receive_until(lambda f: f["type"] == "history")
        assert await tab.nothing_more(timeout=2 * TTL)  # joined, and left the answer to it
        assert json.loads(await get_redis().get(key))["channel"] == DEAD_CHANNEL
        (still,) = await bot_messages(first["id"])
        assert still.pk == live and still.finish_reason == ""
    finally:
        renewer.cancel()


async def test_owner_gone_tells_a_renewed_claim_from_one_that_runs_out():
    key = claims.key("c1")
    await get_redis().set(key, json.dumps({"channel": DEAD_CHANNEL}), px=300)
    assert await claims.owner_gone("c1", DEAD_CHANNEL, poll=0.05) is True
    await get_redis().set(key, json.dumps({"channel": DEAD_CHANNEL}), px=800)
    renewing = asyncio.create_task(_renew_soon(key))
    assert await claims.owner_gone("c1", DEAD_CHANNEL, poll=0.05) is False
    await renewing
    await get_redis().set(key, json.dumps({"channel": "specific.other!run"}), px=800)
    assert await claims.owner_gone("c1", DEAD_CHANNEL, poll=0.05) is False  # taken over


async def _renew_soon(key: str) -> None:
    await asyncio.sleep(0.2)
    await get_redis().pexpire(key, 800)
