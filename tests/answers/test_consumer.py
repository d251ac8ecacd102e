"""The customer socket through the real ASGI router, with a worker on the synthetic token source."""

import asyncio
import json

import pytest

from chat.models import Conversation, Message
from runtime.redis_client import get_redis
from tests.conftest import stored_conversation
from tests.waiting import poll

pytestmark = pytest.mark.django_db(transaction=True)


async def stored(conversation_id) -> list[Message]:
    return [m async for m in Message.objects.filter(conversation_id=conversation_id).order_by("id")]


async def test_new_conversation_streams_and_stores_the_answer(connect, worker, engine):
    client, first = await connect("lang=en&region=Berlin&tz=Europe%2FBerlin")
    assert first["type"] == "conversation" and first["token"] and first["resumed"] is False

    await client.send({"type": "message", "text": "When do orders ship?", "client_id": "c1"})
    ack = await client.receive()
    assert ack["type"] == "message.ack" and ack["client_id"] == "c1"
    conversation = await Conversation.objects.aget(pk=first["id"])
    assert conversation.token_hash != first["token"] and len(conversation.token_hash) == 64
    assert (conversation.language, conversation.region) == ("en", "Berlin")
    frames = await client.answer()
    start, *deltas, done = frames
    assert start["type"] == "bot.start"
    assert {f["type"] for f in deltas} == {"bot.delta"}
    assert done["type"] == "bot.done" and done["finish_reason"] == "stop"
    assert done["fallback"] is False and done["partial"] is False

    customer, bot = await stored(first["id"])
    assert (customer.id, customer.role, customer.text) == (
        ack["id"],
        "customer",
        "When do orders ship?",
    )
    assert bot.id == start["message_id"] == done["message_id"]
    assert bot.text == "".join(f["text"] for f in deltas) == "Hello! How can I help you today?"
    assert bot.completion_tokens == done["usage"]["completion_tokens"] == len(bot.text)
    assert bot.prompt_tokens == done["usage"]["prompt_tokens"] > 0
    assert bot.ttft_ms is not None and bot.total_ms >= bot.ttft_ms
    assert bot.model_name == "synthetic-token-source" and not bot.is_partial

    # The prompt carried the rendered system prompt and the customer's words.
    (prompt,) = engine.prompts.values()
    assert "Berlin" in prompt and "English" in prompt and "When do orders ship?" in prompt


async def test_second_turn_carries_the_first(connect, worker, engine):
    client, _ = await connect()
    await client.send({"type": "message", "text": "My name is Ada.", "client_id": "1"})
    await client.answer()
    await client.send({"type": "message", "text": "What is my name?", "client_id": "2"})
    await client.answer()
    second = list(engine.prompts.values())[-1]
    assert (
        second.index("My name is Ada.")
        < second.index("Hello! How can I help")
        < second.index("What is my name?")
    )


async def test_a_question_stored_while_the_run_looks_for_one_is_answered(
    connect, worker, engine, monkeypatch
):
    """Before it ends, the run that answered looks in the database for a newer question when
    someone asked meanwhile (here another process, whose take of the claim failed). On
    PostgreSQL a socket stores the next one in another thread: the query can read a snapshot
    from before it while the socket, finding the run still there, hands the question to it.
    Here the first look is held until the question is handed over; it must be answered."""
    from chat import selectors
    from chat.answering import claims
    from chat.answering import run as run_module

    looked, handed = asyncio.Event(), asyncio.Event()
    real_db = run_module.db

    def db(func):
        hop = real_db(func)
        if func is not selectors.newest_unanswered_customer_message or looked.is_set():
            return hop

        async def read_before_the_question(**kwargs):
            found = await hop(**kwargs)
            looked.set()
            await handed.wait()
            return found

        return read_before_the_question

    real_post = run_module.AnswerRun.post

    def post(run, event):
        real_post(run, event)
        if looked.is_set() and event["type"] == "answer.join":
            handed.set()

    monkeypatch.setattr(run_module, "db", db)
    monkeypatch.setattr(run_module.AnswerRun, "post", post)
    engine.tokens_per_second = 40  # the first answer lasts long enough to be asked during it

    client, first = await connect()
    await client.send({"type": "message", "text": "Where is my parcel?", "client_id": "1"})
    await client.receive_until(lambda f: f["type"] == "bot.start")
    assert not await claims.take(first["id"], {"channel": "specific.web2!x", "message_id": None})
    await client.answer()
    await asyncio.wait_for(looked.wait(), 5)
    await client.send({"type": "message", "text": "And my refund?", "client_id": "2"})
    assert (await client.receive())["type"] == "message.ack"
    await asyncio.wait_for(handed.wait(), 5)

    done = (await client.answer())[-1]
    assert done["fallback"] is False
    assert [m.role for m in await stored(first["id"])] == ["customer", "bot", "customer", "bot"]


async def test_resend_with_same_client_id_is_stored_once(connect, worker):
    client, first = await connect()
    await client.send({"type": "message", "text": "What do you sell?", "client_id": "same"})
    ack1 = await client.receive()
    await client.answer()
    await client.send({"type": "message", "text": "What do you sell?", "client_id": "same"})
    ack2 = await client.receive()
    assert ack2["id"] == ack1["id"] and ack2["duplicate"] is True
    assert await client.nothing_more()  # no second answer either
    assert [m.role for m in await stored(first["id"])] == ["customer", "bot"]


async def test_resume_with_token_returns_history_and_continues(connect, worker, engine):
    client, first = await connect()
    await client.send({"type": "message", "text": "first question", "client_id": "a"})
    await client.answer()
    await client.close()

    again, frame = await connect(f"conversation={first['id']}&token={first['token']}")
    assert frame == {"type": "conversation", "id": first["id"], "status": "bot", "resumed": True}
    history = await again.receive()
    assert history["type"] == "history"
    assert [(m["role"], m["text"]) for m in history["messages"]] == [
        ("customer", "first question"),
        ("bot", "Hello! How can I help you today?"),
    ]
    await again.send({"type": "message", "text": "second question", "client_id": "b"})
    await again.receive()
    await again.answer()
    assert "first question" in list(engine.prompts.values())[-1]


@pytest.mark.parametrize(
    "query",
    [
        "conversation=00000000-0000-0000-0000-000000000000&token=x",
        "conversation=not-a-uuid&token=x",
        "token=only-a-token",
    ],
)
async def test_unknown_conversation_is_refused(connect, query):
    client, frame = await connect(query)
    assert frame["type"] == "error" and frame["code"] == "conversation_not_found"
    assert (await client.ws.receive_output(timeout=1))["type"] == "websocket.close"
    assert await Conversation.objects.acount() == 0


async def test_another_conversations_id_with_my_token_is_refused(connect):
    _, mine = await connect()
    _, theirs = await connect()
    client, frame = await connect(f"conversation={theirs['id']}&token={mine['token']}")
    assert frame["code"] == "conversation_not_found"


async def test_foreign_origin_and_missing_origin_are_refused():
    from channels.testing import WebsocketCommunicator

    from cs_site.asgi import application

    for headers in ([(b"origin", b"https://evil.example")], []):
        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected is False
        await communicator.wait()
    assert await Conversation.objects.acount() == 0


async def test_a_ping_rejoins_the_conversation_group_lost_with_a_redis_restart(connect):
    from channels.layers import get_channel_layer

    from chat import group_events
    from runtime.redis_client import get_redis

    client, first = await connect()
    await get_redis().flushall()  # what a restarted Redis without persistence holds
    await client.send({"type": "ping"})
    assert await client.receive() == {"type": "pong"}
    await get_channel_layer().group_send(
        group_events.conversation_group(first["id"]),
        group_events.conv_status(conversation_id=first["id"], status="human", agent_name="Ada"),
    )
    assert (await client.receive()) == {"type": "agent.joined", "agent_name": "Ada"}


async def test_bad_frames_get_errors_and_the_socket_stays_usable(connect, worker):
    client, first = await connect()
    for bad in [
        "nonsense",
        json.dumps({"type": "nope"}),
        json.dumps({"type": "message", "text": ""}),
        json.dumps({"type": "message", "text": "x" * 4001}),
    ]:
        await client.send(bad)
        assert (await client.receive())["type"] == "error"
    await client.ws.send_to(bytes_data=b"\x00\xff")
    assert (await client.receive())["code"] == "bad_frame"
    assert await Message.objects.acount() == 0
    await client.send({"type": "ping"})
    assert (await client.receive()) == {"type": "pong"}
    await client.send({"type": "message", "text": "still here?", "client_id": "ok"})
    assert (await client.receive())["type"] == "message.ack"


async def test_flooding_is_limited_per_conversation_across_reconnects(connect, settings):
    settings.CHAT = {**settings.CHAT, "SOCKET_RATE_LIMIT": "4/minute"}
    client, first = await connect()
    for _ in range(10):  # heartbeats are not counted: every open tab sends them
        await client.send({"type": "ping"})
        assert (await client.receive())["type"] == "pong"
    for _ in range(3):
        await client.send("nonsense")  # bad frames count
        assert (await client.receive())["code"] == "bad_frame"
    await client.close()

    # A reconnect does not start a fresh budget: the limit is kept in Redis per conversation.
    again, _ = await connect(f"conversation={first['id']}&token={first['token']}")
    await again.receive()  # history
    await again.send({"type": "message", "text": "What do you sell?", "client_id": "x"})
    assert (await again.receive())["type"] == "message.ack"
    await again.send({"type": "message", "text": "hello again", "client_id": "y"})
    # The answer to the first question may start first (a worker of an earlier test may still be known).
    frame = (await again.receive_until(lambda f: f["type"] == "error"))[-1]
    assert frame["code"] == "rate_limited" and frame["client_id"] == "y"
    assert 0 < frame["retry_after"] <= 60 and "wait" in frame["message"]
    assert [m.text async for m in Message.objects.filter(role="customer")] == ["What do you sell?"]


async def test_messages_are_limited_per_client_address_over_all_conversations(connect, settings):
    settings.CHAT = {**settings.CHAT, "IP_MESSAGE_LIMIT": "2/minute"}
    customer = ("203.0.113.7", 5000)
    one, _ = await connect(client=customer)
    two, _ = await connect(client=customer)
    other, _ = await connect(client=("198.51.100.9", 5000))
    for client, client_id in ((one, "a"), (two, "b")):
        await client.send({"type": "message", "text": "What do you sell?", "client_id": client_id})
        assert (await client.receive())["type"] == "message.ack"
    await two.send({"type": "message", "text": "What do you sell?", "client_id": "c"})
    frame = await two.receive_until(lambda f: f["type"] == "error")
    assert frame[-1]["code"] == "rate_limited" and frame[-1]["client_id"] == "c"
    await other.send({"type": "message", "text": "What do you sell?", "client_id": "d"})
    assert (await other.receive())["type"] == "message.ack"  # another address is not held up
    assert await Message.objects.filter(role="customer").acount() == 3


async def test_new_conversations_are_limited_per_client_address(connect, settings):
    settings.CHAT = {**settings.CHAT, "IP_CONVERSATION_LIMIT": "2/minute"}
    customer = ("203.0.113.7", 5000)
    for _ in range(2):
        _, frame = await connect(client=customer)
        assert frame["type"] == "conversation"
    refused, frame = await connect(client=customer)
    assert frame["type"] == "error" and frame["code"] == "rate_limited"
    assert frame["retry_after"] > 0 and "try again" in frame["message"]
    assert (await refused.ws.receive_output(timeout=1)) == {"type": "websocket.close", "code": 4429}
    # Two drafts (no rows before a first message); the refused socket made none.
    assert len([key async for key in get_redis().scan_iter("conversation:draft:*")]) == 2
    _, frame = await connect(client=("198.51.100.9", 5000))
    assert frame["type"] == "conversation"


async def test_closed_conversation_refuses_messages(connect):
    client, first = await connect()
    await stored_conversation(first)
    await Conversation.objects.filter(pk=first["id"]).aupdate(status=Conversation.Status.CLOSED)
    await client.send({"type": "message", "text": "hello?", "client_id": "x"})
    assert (await client.receive())["code"] == "conversation_closed"
    assert await Message.objects.acount() == 0


async def test_no_worker_means_an_immediate_fallback_answer(connect):
    client, first = await connect("lang=zh-CN")
    await client.send({"type": "message", "text": "你好", "client_id": "x"})
    await client.receive()
    start, delta, done = await client.answer(timeout=3)
    assert done["fallback"] is True and done["finish_reason"] == "unavailable"
    assert "客服" in delta["text"]  # the built-in apology in the customer's language
    bot = await Message.objects.aget(pk=start["message_id"])
    assert bot.is_fallback and bot.text == delta["text"]


@pytest.fixture
def slow_engine(engine):
    engine.tokens_per_second = 20  # a long answer: ~5 s
    engine.reply = lambda prompt: "word " * 25
    return engine


async def test_disconnect_mid_answer_cancels_at_the_worker_and_keeps_the_partial(
    connect, slow_engine, worker, settings
):
    settings.CHAT = {**settings.CHAT, "REJOIN_GRACE_SECONDS": 0.2}
    client, first = await connect()
    await client.send({"type": "message", "text": "tell me a story", "client_id": "x"})
    await client.receive()
    await client.receive_until(lambda f: f["type"] == "bot.delta")
    await client.close()
    await poll(lambda: slow_engine.aborted)  # after the rejoin grace
    assert len(slow_engine.aborted) == 1
    assert slow_engine.running_requests() == 0

    async def stored():  # the run stores the text once the engine has stopped
        bot = await Message.objects.aget(conversation_id=first["id"], role="bot")
        return bot if bot.finish_reason else None

    bot = await poll(stored)
    assert bot.is_partial and bot.finish_reason == "disconnected"
    assert 0 < len(bot.text) < len("word " * 25)


async def test_first_token_deadline_falls_back_and_cancels(connect, engine, worker, settings):
    engine.first_token_delay = 3
    settings.CHAT = {**settings.CHAT, "FIRST_TOKEN_TIMEOUT_SECONDS": 0.3}
    client, first = await connect()
    await client.send({"type": "message", "text": "What do you sell?", "client_id": "x"})
    await client.receive()
    frames = await client.receive_until(lambda f: f["type"] == "bot.done" and f["fallback"])
    fallback_done = frames[-1]
    assert fallback_done["finish_reason"] == "timeout"
    await poll(lambda: engine.aborted)
    assert engine.aborted and engine.running_requests() == 0
    # The started-but-silent answer is kept as an empty partial; the fallback answered.
    bots = [m async for m in Message.objects.filter(role="bot").order_by("id")]
    assert [(m.is_partial, m.is_fallback) for m in bots] == [(True, False), (False, True)]


async def test_messages_during_an_answer_are_answered_after_it(connect, engine, worker):
    engine.tokens_per_second = 100
    client, first = await connect()
    await client.send({"type": "message", "text": "one", "client_id": "1"})
    await client.receive()
    await client.send({"type": "message", "text": "two", "client_id": "2"})
    frames = await client.receive_until(lambda f: f["type"] == "bot.done")
    assert any(f["type"] == "message.ack" and f["client_id"] == "2" for f in frames)
    await client.answer()
    roles = [m.role for m in await stored(first["id"])]
    assert roles == ["customer", "customer", "bot", "bot"] or roles == [
        "customer",
        "bot",
        "customer",
        "bot",
    ]
    assert "two" in list(engine.prompts.values())[-1]


async def test_model_text_is_sent_as_data_not_markup(connect, engine, worker):
    engine.reply = lambda prompt: '<img src=x onerror="alert(1)"> "quoted"'
    client, _ = await connect()
    await client.send({"type": "message", "text": "<script>alert(2)</script>", "client_id": "x"})
    await client.receive()
    frames = await client.answer()
    text = "".join(f["text"] for f in frames if f["type"] == "bot.delta")
    assert text == '<img src=x onerror="alert(1)"> "quoted"'  # JSON-escaped on the wire, intact


async def test_redis_failure_when_asking_the_workers_falls_back(connect, worker, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from inference_worker import pool

    async def broken(_redis, _channel):
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(pool, "capacity", broken)
    client, first = await connect()
    await client.send({"type": "message", "text": "What do you sell?", "client_id": "x"})
    assert (await client.receive())["type"] == "message.ack"
    *_, done = await client.answer(timeout=3)
    assert done["fallback"] is True and done["finish_reason"] == "unavailable"
    assert [m.role for m in await stored(first["id"])] == ["customer", "bot"]


async def test_a_refused_message_names_its_client_id(connect):
    client, _ = await connect()
    await client.send({"type": "message", "text": "x" * 4001, "client_id": "long-one"})
    frame = await client.receive()
    assert (frame["code"], frame["client_id"]) == ("message_too_long", "long-one")
    await client.send("{not json")
    assert "client_id" not in await client.receive()
