"""The chat API (/api/v1/) through Django's async client, the real ASGI views, real Redis and an
in-process worker on the synthetic token source: answers, memory, sessions, SSE, hand-off,
a human holding the conversation, and bad input."""

import asyncio
import json
import random
import string

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from agents import services as agent_services
from chat import answering
from chat.answering import claims
from chat.models import ApiScope, Conversation, Message
from inference_worker.synthetic import chatml
from runtime.redis_client import get_redis
from tests.api.helpers import chat, make_client, parse_sse, read_stream
from tests.waiting import poll

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def api():
    return await make_client()


async def test_an_answer_comes_whole_and_the_session_remembers(api, worker, engine):
    first = await chat(api, session_id="order-42", user_input="When do parcels ship?")
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["response"] == engine.reply("")
    assert body["status"] == "bot" and body["fallback"] is False
    assert body["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] > 0

    second = (await chat(api, session_id="order-42", user_input="And when?")).json()
    assert second["conversation_id"] == body["conversation_id"]
    assert second["usage"]["prompt_tokens"] > body["usage"]["prompt_tokens"]
    prompt = list(engine.prompts.values())[-1]
    assert (
        "When do parcels ship?" in prompt and engine.reply("") in prompt and "And when?" in prompt
    )

    conversation = await Conversation.objects.aget(pk=body["conversation_id"])
    assert conversation.channel == Conversation.Channel.API
    bot = await Message.objects.aget(pk=second["message_id"])
    assert bot.role == "bot" and bot.text == second["response"]


async def test_sessions_of_two_keys_never_meet(worker, engine):
    one, two = await make_client(), await make_client()
    a = (await chat(one, session_id="same", user_input="I am customer one")).json()
    b = (await chat(two, session_id="same", user_input="I am customer two")).json()
    assert a["conversation_id"] != b["conversation_id"]

    history = (await two.get("/api/v1/sessions/same/messages")).json()
    texts = [m["text"] for m in history["messages"]]
    assert "I am customer two" in texts and "I am customer one" not in texts
    assert "I am customer one" not in list(engine.prompts.values())[-1]


async def test_sampling_is_clamped_to_the_bot_profile(api, worker, engine):
    # The synthetic source counts a token a character; letters at random, so that no guard
    # takes them for a loop, and no sentence end, so that none cuts them back.
    rng = random.Random(1)
    text = "".join(rng.choice(string.ascii_lowercase) for _ in range(1000))
    engine.reply = lambda prompt: text
    body = (await chat(api, session_id="s", user_input="What do you sell?", max_tokens=5)).json()
    assert body["response"] == text[:5] and body["finish_reason"] == "length"
    body = (await chat(api, session_id="s", user_input="more", max_tokens=8000)).json()
    assert len(body["response"]) == 320  # the default profile's max_tokens


async def test_a_human_holding_the_conversation_silences_the_bot(api, worker, engine):
    first = (await chat(api, session_id="s", user_input="What do you sell?")).json()
    agent = await sync_to_async(get_user_model().objects.create_user)(
        "agent", password="x", is_staff=True
    )
    await sync_to_async(agent_services.takeover)(
        conversation_id=first["conversation_id"], agent=agent
    )
    asked = len(engine.prompts)

    body = (await chat(api, session_id="s", user_input="are you there?")).json()
    assert body["status"] == "human"
    assert body["response"] is None and body["message_id"] is None
    assert len(engine.prompts) == asked
    assert await Message.objects.filter(pk=body["question_id"]).aexists()


async def test_asking_for_a_human_hands_the_session_over(api, worker, engine):
    body = (await chat(api, session_id="s", user_input="I want to talk to a human")).json()
    assert body["status"] == "waiting" and body["response"] is None
    assert not engine.prompts


async def test_a_stream_carries_the_sockets_frames(api, worker, engine):
    response = await chat(api, session_id="s", user_input="What do you sell?", stream=True)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["X-Accel-Buffering"] == "no"
    events = parse_sse(await read_stream(response))
    names = [name for name, _ in events]
    assert names[0] == "message.ack" and names[1] == "bot.start" and names[-1] == "bot.done"
    assert set(names[2:-1]) == {"bot.delta"}
    assert all(data["type"] == name for name, data in events)
    ack, start, done = events[0][1], events[1][1], events[-1][1]
    assert start["reply_to"] == ack["id"]
    assert "".join(d["text"] for n, d in events if n == "bot.delta") == engine.reply("")
    assert done["message_id"] == start["message_id"] and done["finish_reason"] == "stop"


async def test_accept_event_stream_also_streams(api, worker):
    response = await api.post(
        "/api/v1/chat",
        {"session_id": "s", "user_input": "What do you sell?"},
        headers={"Accept": "text/event-stream"},
    )
    assert response["Content-Type"].startswith("text/event-stream")
    assert parse_sse(await read_stream(response))[-1][0] == "bot.done"


async def test_a_second_message_while_one_streams_is_refused(api, worker, engine):
    engine.tokens_per_second = 20
    engine.reply = lambda prompt: " ".join(f"word{i}" for i in range(30))
    streaming = asyncio.create_task(chat(api, session_id="s", user_input="long one"))

    async def streaming_now() -> bool:
        conversation = await Conversation.objects.filter(channel="api").afirst()
        return bool(conversation and await answering.live_answer(conversation.pk))

    await poll(streaming_now)
    refused = await chat(api, session_id="s", user_input="hello?")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert (await streaming).status_code == 200


async def test_a_message_sent_as_the_answer_before_it_lets_go_is_answered(api, worker, engine):
    """The run that answered sends bot.done first and lets go of the conversation a moment
    later: a client asking again at once waits for that instead of being refused."""
    first = (await chat(api, session_id="s", user_input="What do you sell?")).json()
    claim = claims.key(first["conversation_id"])
    redis = get_redis()
    await redis.set(claim, json.dumps({"channel": "specific.elsewhere!run", "message_id": None}))
    releasing = asyncio.get_running_loop().call_later(
        0.3, lambda: asyncio.ensure_future(redis.delete(claim))
    )
    try:
        second = await chat(api, session_id="s", user_input="and then?")
    finally:
        releasing.cancel()
        await redis.delete(claim)
    assert second.status_code == 200, second.content
    assert second.json()["response"] == engine.reply("")


async def test_feedback_history_and_handoff(api, worker):
    body = (await chat(api, session_id="s", user_input="What do you sell?")).json()
    rated = await api.post(
        "/api/v1/sessions/s/feedback", {"message_id": body["message_id"], "rating": "up"}
    )
    assert rated.status_code == 200 and rated.json()["rating"] == "up"
    not_bot = await api.post(
        "/api/v1/sessions/s/feedback", {"message_id": body["question_id"], "rating": "up"}
    )
    assert not_bot.status_code == 404 and not_bot.json()["error"]["field"] == "message_id"

    history = (await api.get("/api/v1/sessions/s/messages")).json()
    assert [m["role"] for m in history["messages"]] == ["customer", "bot"]
    assert history["messages"][1]["rating"] == "up"

    handed = await api.post("/api/v1/sessions/s/handoff")
    assert handed.status_code == 200 and handed.json()["status"] == "waiting"
    conversation = await Conversation.objects.aget(pk=body["conversation_id"])
    assert conversation.status == Conversation.Status.WAITING


async def test_unknown_sessions_are_404(api):
    for response in (
        await api.get("/api/v1/sessions/nope/messages"),
        await api.post("/api/v1/sessions/nope/handoff"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


async def test_bad_input_is_named(api):
    missing = await chat(api, session_id="s")
    assert missing.status_code == 422
    assert missing.json()["error"]["field"] == "user_input"
    unknown = await chat(api, session_id="s", user_input="What do you sell?", temprature=0.5)
    assert unknown.status_code == 400
    assert unknown.json()["error"] == {
        "code": "unsupported_parameter",
        "field": "temprature",
        "message": "Unknown or unsupported parameter 'temprature'.",
    }
    bad_range = await chat(api, session_id="s", user_input="What do you sell?", temperature=5)
    assert bad_range.status_code == 422 and bad_range.json()["error"]["field"] == "temperature"
    bad_id = await chat(api, session_id="has space", user_input="What do you sell?")
    assert bad_id.status_code == 422 and bad_id.json()["error"]["field"] == "session_id"
    not_json = await api.post("/api/v1/chat", "{nope")
    assert not_json.status_code == 422 and "JSON" in not_json.json()["error"]["message"]
    assert not await Conversation.objects.aexists()


async def test_oversized_bodies_are_413(api, settings):
    settings.API = {**settings.API, "MAX_BODY_BYTES": 1000}
    response = await chat(api, session_id="s", user_input="x" * 2000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert not await Conversation.objects.aexists()


async def test_a_key_without_the_chat_scope_is_403(worker):
    client = await make_client(scopes=(ApiScope.OPENAI,))
    response = await chat(client, session_id="s", user_input="What do you sell?")
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


async def test_session_events_stream_an_agents_reply(api, worker):
    body = (await chat(api, session_id="s", user_input="What do you sell?")).json()
    response = await api.get("/api/v1/sessions/s/events")
    assert response["Content-Type"].startswith("text/event-stream")
    stream = aiter(response.streaming_content)
    assert (await anext(stream)).startswith(b": connected")
    agent = await sync_to_async(get_user_model().objects.create_user)(
        "agent", first_name="Ada", password="x", is_staff=True
    )
    cid = body["conversation_id"]
    await sync_to_async(agent_services.takeover)(conversation_id=cid, agent=agent)
    await sync_to_async(agent_services.reply)(
        conversation_id=cid, agent=agent, text="Ada here, how can I help?"
    )
    await sync_to_async(agent_services.close)(conversation_id=cid, agent=agent)
    received = b""
    async with asyncio.timeout(10):
        async for chunk in stream:
            received += chunk
    names = [(name, data.get("text", data.get("agent_name"))) for name, data in parse_sse(received)]
    assert names == [
        ("agent.joined", "Ada"),
        ("agent.message", "Ada here, how can I help?"),
        ("conversation.closed", None),
    ]


async def test_api_conversations_show_their_channel_in_the_console(api, worker):
    body = (await chat(api, session_id="s", user_input="hello from the app")).json()
    agent = await sync_to_async(get_user_model().objects.create_user)(
        "agent", password="x", is_staff=True
    )
    client = AsyncClient()
    await sync_to_async(client.force_login)(agent)
    inbox = (await client.get("/console/")).content.decode()
    assert "Chat API" in inbox
    pane = (await client.get(f"/console/c/{body['conversation_id']}/")).content.decode()
    assert "Chat API" in pane and "hello from the app" in pane


async def test_text_no_keyboard_makes_is_refused_not_stored(api):
    for body, field in (
        ({"user_input": "hi\x00there"}, "user_input"),
        ({"user_input": "\u200b\u200b"}, "user_input"),
        ({"user_input": "What do you sell?", "client_id": "a b"}, "client_id"),
    ):
        response = await chat(api, session_id="s", **body)
        assert response.status_code == 422, body
        assert response.json()["error"]["field"] == field
    assert not await Message.objects.aexists()
    # Metadata is kept without what cannot be stored.
    ok = await chat(api, session_id="t", user_input="What do you sell?", region="Ly\x00on")
    assert ok.status_code == 200
    conversation = await Conversation.objects.aget(channel="api")
    assert conversation.region == "Lyon"


async def test_the_answer_keeps_the_prompt_the_model_saw(api, worker, engine, settings):
    first = (await chat(api, session_id="s", user_input="first question")).json()
    stored = await Message.objects.aget(pk=first["message_id"])
    assert [m["role"] for m in stored.prompt] == ["system", "user"]
    assert stored.prompt[-1]["content"] == "first question"
    # A budget that holds only the newest turn: the stored prompt is what the worker kept.
    newest_only = chatml([stored.prompt[0], {"role": "user", "content": "second question"}])
    engine.max_model_len = len(newest_only) + 10 + 100  # + max_tokens
    second = (await chat(api, session_id="s", user_input="second question", max_tokens=100)).json()
    kept = (await Message.objects.aget(pk=second["message_id"])).prompt
    assert [m["role"] for m in kept] == ["system", "user"]
    assert kept[1]["content"] == "second question"
