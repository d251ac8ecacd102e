"""One answer per question, owned by the conversation: tabs, reloads, late joiners, dead workers,
a full queue and a stopping process (chat.answering), through the real ASGI router and Redis."""

import asyncio
import gc
import json
import time
import types

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from chat import answering, selectors, services
from chat.answering import claims, registry
from chat.models import Conversation, Message
from inference_worker import pool, protocol
from runtime.redis_client import get_redis
from tests.waiting import poll

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def stop_runs():
    yield
    await answering.persist_all("test_over")


@pytest.fixture
def slow_engine(engine):
    engine.tokens_per_second = 40  # ~2.5 s for the whole answer, many deltas
    engine.reply = lambda prompt: " ".join(f"word{i}" for i in range(20))
    return engine


async def bot_messages(conversation_id) -> list[Message]:
    return [
        m
        async for m in Message.objects.filter(conversation_id=conversation_id, role="bot").order_by(
            "id"
        )
    ]


def streamed(frames: list[dict]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "bot.delta")


async def test_two_tabs_get_one_answer_and_both_show_it(connect, worker, slow_engine):
    tab1, first = await connect()
    tab2, resumed = await connect(f"conversation={first['id']}&token={first['token']}")
    assert resumed["resumed"] is True
    assert (await tab2.receive())["type"] == "history"

    await tab1.send({"type": "message", "text": "What do you sell?", "client_id": "m1"})
    assert (await tab1.receive())["type"] == "message.ack"
    frames1 = await tab1.answer()
    frames2 = await tab2.answer()

    (bot,) = await bot_messages(first["id"])
    assert streamed(frames1) == streamed(frames2) == bot.text == slow_engine.reply("")
    assert frames2[-1]["message_id"] == bot.id
    assert len(slow_engine.prompts) == 1


async def test_an_ended_answer_run_is_freed_without_waiting_for_a_garbage_collection(
    connect, worker, slow_engine
):
    """Reference counting alone frees a run once it has ended, answered or stopped: a run left
    to the garbage collector would, with hundreds of answers a minute, make its full
    collections longer, and each stalls every stream of the process."""

    gc.collect()
    gc.disable()
    # An earlier test's runs may still be referenced (by a task its event loop left behind).
    earlier = [o for o in gc.get_objects() if isinstance(o, answering.AnswerRun)]

    def runs_alive() -> int:
        return sum(
            isinstance(o, answering.AnswerRun) and all(o is not e for e in earlier)
            for o in gc.get_objects()
        )

    try:
        tab, _ = await connect()
        await tab.send({"type": "message", "text": "What do you sell?", "client_id": "m1"})
        await tab.receive()
        await tab.answer()
        await poll(lambda: not answering.tasks)
        assert runs_alive() == 0

        await tab.send({"type": "message", "text": "and then?", "client_id": "m2"})
        await tab.receive_until(lambda f: f["type"] == "bot.delta")
        assert runs_alive() == 1  # the count sees a live run
        await answering.persist_all("test_over")  # what a stopping process does
        await poll(lambda: not answering.tasks)
        assert runs_alive() == 0
    finally:
        gc.enable()


async def test_a_tab_that_joins_mid_answer_gets_the_text_so_far_then_the_rest(
    connect, worker, slow_engine
):
    tab1, first = await connect()
    await tab1.send({"type": "message", "text": "tell me", "client_id": "m1"})
    await tab1.receive()
    await tab1.receive_until(lambda f: f["type"] == "bot.delta" and "word3" in f["text"])

    tab2, _ = await connect(f"conversation={first['id']}&token={first['token']}")
    history = await tab2.receive()
    # The answer still streaming is not history yet: it comes as a stream.
    assert [m["role"] for m in history["messages"]] == ["customer"]
    frames2 = await tab2.answer()
    assert frames2[0]["type"] == "bot.start"
    assert frames2[1]["type"] == "bot.delta" and "word0" in frames2[1]["text"]
    await tab1.answer()
    (bot,) = await bot_messages(first["id"])
    assert streamed(frames2) == bot.text and not bot.is_partial
    assert len(slow_engine.prompts) == 1


async def test_a_reload_mid_answer_does_not_ask_again(connect, worker, slow_engine, settings):
    settings.CHAT = {**settings.CHAT, "REJOIN_GRACE_SECONDS": 3.0}
    tab, first = await connect()
    await tab.send({"type": "message", "text": "tell me", "client_id": "m1"})
    await tab.receive()
    await tab.receive_until(lambda f: f["type"] == "bot.delta")
    await tab.close()

    again, _ = await connect(f"conversation={first['id']}&token={first['token']}")
    await again.receive()  # history
    frames = await again.answer()
    (bot,) = await bot_messages(first["id"])
    assert not bot.is_partial and streamed(frames) == bot.text == slow_engine.reply("")
    assert len(slow_engine.prompts) == 1 and not slow_engine.aborted


async def test_the_answer_stops_when_every_tab_is_gone_for_the_grace_period(
    connect, worker, slow_engine, settings
):
    settings.CHAT = {**settings.CHAT, "REJOIN_GRACE_SECONDS": 0.3}
    # Long enough (~20 s) that the answer cannot end by itself on a busy machine first.
    slow_engine.reply = lambda prompt: " ".join(f"word{i}" for i in range(120))
    tab, first = await connect()
    await tab.send({"type": "message", "text": "tell me", "client_id": "m1"})
    await tab.receive()
    await tab.receive_until(lambda f: f["type"] == "bot.delta")
    await tab.close()
    await poll(lambda: slow_engine.aborted, timeout=15)
    await poll(lambda: slow_engine.running_requests() == 0, timeout=15)

    async def stored_partial():
        (bot,) = await bot_messages(first["id"])
        return bot if bot.finish_reason else None

    bot = await poll(stored_partial, timeout=15)
    assert bot.is_partial and bot.finish_reason == "disconnected"
    assert 0 < len(bot.text) < len(slow_engine.reply(""))

    async def released():  # the run lets go of the claim as it ends, just after the store
        return await answering.live_answer(first["id"]) is None

    assert await poll(released)


async def test_a_question_from_another_process_joins_the_run_that_holds_the_conversation(
    connect, worker, slow_engine
):
    """The claim is in Redis: a second claimant (another process) loses and only joins."""
    tab, first = await connect()
    await tab.send({"type": "message", "text": "one", "client_id": "m1"})
    await tab.receive()
    await tab.receive_until(lambda f: f["type"] == "bot.start")
    claim = await answering.live_answer(first["id"])
    assert claim is not None and claim["message_id"] is not None
    stored = await get_redis().get(f"chat:answering:{first['id']}")
    assert stored is not None  # visible to every process, with a TTL
    assert (
        0
        < await get_redis().pttl(f"chat:answering:{first['id']}")
        <= (settings.CHAT["ANSWER_CLAIM_TTL_SECONDS"] * 1000)
    )


async def test_a_question_stored_elsewhere_while_the_run_answers_is_answered_next(
    connect, worker, slow_engine
):
    """Another process stores a question, finds the conversation claimed and leaves it to the
    run that holds it: its failed take marks the conversation asked, and the run looks."""
    tab, first = await connect()
    await tab.send({"type": "message", "text": "one", "client_id": "m1"})
    await tab.receive()
    await tab.receive_until(lambda f: f["type"] == "bot.start")
    conversation = await Conversation.objects.aget(pk=first["id"])
    question, _ = await sync_to_async(services.message_add_customer)(
        conversation=conversation, text="two", client_id="m2"
    )
    assert not await claims.take(first["id"], {"channel": "specific.web2!x", "message_id": None})
    assert await get_redis().exists(claims.asked_key(first["id"]))

    await tab.answer()
    start = (await tab.receive_until(lambda f: f["type"] == "bot.start"))[-1]
    assert start["reply_to"] == question.pk
    await tab.answer()
    assert len(await bot_messages(first["id"])) == 2
    assert not await get_redis().exists(claims.asked_key(first["id"]))  # taken with the claim


async def test_an_answer_nobody_added_to_ends_without_a_database_look(
    connect, worker, engine, monkeypatch
):
    """Most answers end with no newer question: the run does not ask the database for one."""
    looks = []
    real = selectors.newest_unanswered_customer_message

    def counted(**kwargs):
        looks.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(selectors, "newest_unanswered_customer_message", counted)
    tab, first = await connect()
    for n in range(2):
        await tab.send({"type": "message", "text": f"question {n}", "client_id": f"m{n}"})
        await tab.answer()

        async def released():
            return await answering.live_answer(first["id"]) is None

        assert await poll(released)
    assert looks == [] and len(await bot_messages(first["id"])) == 2


async def test_an_answer_longer_than_its_claims_ttl_keeps_the_claim(
    connect, worker, slow_engine, settings
):
    settings.CHAT = {**settings.CHAT, "ANSWER_CLAIM_TTL_SECONDS": 0.6, "PARTIAL_SAVE_SECONDS": 0.2}
    tab, first = await connect()
    await tab.send({"type": "message", "text": "one", "client_id": "m1"})
    await tab.receive()
    await tab.receive_until(lambda f: f["type"] == "bot.delta" and "word0" in f["text"])
    started = time.monotonic()
    frames = await tab.receive_until(lambda f: f["type"] == "bot.delta" and "word8" in f["text"])
    assert time.monotonic() - started > 0.6 and frames  # longer than one TTL ...
    assert await get_redis().get(f"chat:answering:{first['id']}") is not None  # ... still held
    await tab.answer()


async def test_claims_are_renewed_together_and_only_while_they_are_this_processs(settings):
    """Between two questions a run lets go of its claim; another process may take it then."""
    settings.CHAT = {**settings.CHAT, "PARTIAL_SAVE_SECONDS": 0.05, "ANSWER_CLAIM_TTL_SECONDS": 10}
    redis = get_redis()
    ours = types.SimpleNamespace(cid="ours", channel="specific.web1!run1")
    taken = types.SimpleNamespace(cid="taken", channel="specific.web1!run2")
    await redis.set("chat:answering:ours", json.dumps({"channel": ours.channel}), px=2000)
    await redis.set("chat:answering:taken", json.dumps({"channel": "specific.web2!x"}), px=2000)
    registry.runs.update(ours=ours, taken=taken)
    try:
        claims.keep_alive()

        async def renewed():
            return await redis.pttl("chat:answering:ours") > 2000

        await poll(renewed)
        assert 0 < await redis.pttl("chat:answering:taken") <= 2000  # the other process's
    finally:
        registry.runs.clear()  # stand-ins, not runs: nothing to stop


class SilentWorker:
    """Stands in for a worker that takes one request, starts it, sends one delta and dies."""

    def __init__(self):
        self.layer = get_channel_layer()

    async def take_and_die(self, *, deltas: int = 1) -> dict:
        request = await self.layer.receive(settings.INFERENCE["CHANNEL"])
        reply, rid = request["reply_channel"], request["request_id"]
        await self.layer.send(
            reply, protocol.inference_start(request_id=rid, worker="doomed", model="m")
        )
        for i in range(deltas):
            await self.layer.send(reply, protocol.inference_delta(request_id=rid, text=f"part{i} "))
        return request


async def test_a_worker_that_dies_mid_answer_gives_the_fallback_within_the_stall_timeout(
    connect, settings
):
    settings.CHAT = {**settings.CHAT, "STALL_TIMEOUT_SECONDS": 0.5}
    await pool.beat(get_redis(), "doomed", slots=4)
    tab, first = await connect()
    await tab.send({"type": "message", "text": "What do you sell?", "client_id": "m1"})
    await tab.receive()
    dying = asyncio.create_task(SilentWorker().take_and_die(deltas=2))
    started = time.monotonic()
    frames = await tab.receive_until(lambda f: f["type"] == "bot.done" and f["fallback"])
    await dying
    assert time.monotonic() - started < settings.CHAT["FIRST_TOKEN_TIMEOUT_SECONDS"]
    partial, fallback = await bot_messages(first["id"])
    assert partial.text == "part0 part1 " and partial.is_partial
    assert partial.finish_reason == "worker_lost"
    assert fallback.is_fallback and fallback.finish_reason == "worker_lost"
    assert streamed(frames).startswith("part0 part1 ")


async def test_a_queued_question_gets_the_fallback_once_no_worker_is_alive(connect, settings):
    """Nobody takes the request, and the only worker stops beating: no 30 s wait."""
    settings.INFERENCE = {**settings.INFERENCE, "WORKER_TTL_SECONDS": 0.4}
    await pool.beat(get_redis(), "gone-soon", slots=4)
    tab, first = await connect()
    await tab.send({"type": "message", "text": "What do you sell?", "client_id": "m1"})
    await tab.receive()
    *_, done = await tab.answer(timeout=5)
    assert done["fallback"] is True and done["finish_reason"] == "unavailable"


async def test_a_full_queue_answers_with_the_fallback_at_once(connect, settings):
    """One live worker with two slots and two requests already waiting: no room."""
    await pool.beat(get_redis(), "busy", slots=2)
    layer = get_channel_layer()
    for i in range(2):
        await layer.send(settings.INFERENCE["CHANNEL"], {"type": "inference.request", "n": i})
    tab, first = await connect()
    await tab.send({"type": "message", "text": "What do you sell?", "client_id": "m1"})
    await tab.receive()
    *_, done = await tab.answer(timeout=3)
    assert done["fallback"] is True and done["finish_reason"] == "busy"


async def test_questions_arriving_together_cannot_overfill_the_queue(connect, settings):
    """The queue's limit is checked and the request queued in one atomic step: ten questions
    at once for a worker with four slots and no answer timed yet (half a queue per slot)
    queue exactly two."""

    async def alive():  # a worker with every slot busy: its queue only fills
        while True:
            await pool.beat(get_redis(), "four-slots", slots=4, free=0)
            await asyncio.sleep(0.5)  # a worker's heartbeat period: the behaviour mimicked

    beating = asyncio.create_task(alive())
    await poll(lambda: pool.live_workers(get_redis()))  # its first beat is in
    tabs = [(await connect())[0] for _ in range(10)]
    await asyncio.gather(
        *(
            tab.send({"type": "message", "text": "What do you sell?", "client_id": f"m{n}"})
            for n, tab in enumerate(tabs)
        )
    )
    endings = []
    for tab in tabs:
        assert (await tab.receive())["type"] == "message.ack"
        try:  # the busy fallback comes at once; a queued question hears nothing more
            *_, done = await tab.answer(timeout=3)
            endings.append(done["finish_reason"] if done["fallback"] else "model")
        except TimeoutError:
            endings.append("queued")
    assert sorted(endings) == ["busy"] * 8 + ["queued"] * 2
    assert (await pool.capacity(get_redis(), settings.INFERENCE["CHANNEL"])).queued == 2
    beating.cancel()


async def test_a_site_at_its_concurrent_answer_limit_gets_the_fallback_until_one_ends(
    connect, worker, slow_engine, settings
):
    settings.CHAT = {**settings.CHAT, "SITE_CONCURRENT_ANSWERS": 1}
    first, _ = await connect()
    second, _ = await connect()
    await first.send({"type": "message", "text": "tell me", "client_id": "m1"})
    await first.receive()
    await first.receive_until(lambda f: f["type"] == "bot.delta")

    await second.send({"type": "message", "text": "me too", "client_id": "m2"})
    await second.receive()
    *_, done = await second.answer(timeout=3)
    assert done["fallback"] is True and done["finish_reason"] == "busy"
    assert len(slow_engine.prompts) == 1  # the model never saw the second question

    *_, done = await first.answer()
    assert done["fallback"] is False
    # The slot came back with the end of the answer: the next question reaches the model.
    await second.send({"type": "message", "text": "and now?", "client_id": "m3"})
    await second.receive()
    *_, done = await second.answer()
    assert done["fallback"] is False and len(slow_engine.prompts) == 2


async def test_streamed_text_is_saved_while_it_streams(connect, worker, slow_engine, settings):
    settings.CHAT = {**settings.CHAT, "PARTIAL_SAVE_SECONDS": 0.2}
    tab, first = await connect()
    await tab.send({"type": "message", "text": "tell me", "client_id": "m1"})
    await tab.receive()
    await tab.receive_until(lambda f: f["type"] == "bot.delta" and "word5" in f["text"])

    async def saved_mid_stream():
        (bot,) = await bot_messages(first["id"])
        return (
            bot.text if "word3" in bot.text and bot.is_partial and not bot.finish_reason else None
        )

    assert (await poll(saved_mid_stream)).startswith("word0 word1")
    await tab.answer()


async def test_a_stopping_process_keeps_the_text_and_the_question_is_not_answered_twice(
    connect, worker, slow_engine
):
    tab, first = await connect()
    await tab.send({"type": "message", "text": "tell me", "client_id": "m1"})
    await tab.receive()
    frames = await tab.receive_until(lambda f: f["type"] == "bot.delta" and "word2" in f["text"])
    await answering.persist_all()  # what Daphne's SIGTERM path runs
    (bot,) = await bot_messages(first["id"])
    assert bot.is_partial and bot.finish_reason == "interrupted"
    assert bot.text.startswith(streamed(frames))
    await poll(lambda: slow_engine.aborted)

    again, _ = await connect(f"conversation={first['id']}&token={first['token']}")
    history = await again.receive()
    assert [m["role"] for m in history["messages"]] == ["customer", "bot"]
    assert history["messages"][1]["partial"] is True
    assert await again.nothing_more(0.5)
    assert len(slow_engine.prompts) == 1
