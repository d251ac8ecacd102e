"""A conversation gets its database row, and the console hears of it, with its first message,
not when the widget connects; until then a reload or a second tab resumes it from Redis."""

import asyncio

import pytest
from channels.layers import get_channel_layer

from chat import drafts, group_events
from chat.models import Conversation, Message
from runtime.redis_client import get_redis

pytestmark = pytest.mark.django_db(transaction=True)


async def console_listener():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_events.CONSOLE_GROUP, channel)
    return layer, channel


async def test_connecting_stores_nothing_and_tells_no_console(connect):
    layer, console = await console_listener()
    _, first = await connect("lang=de&region=Bayern")
    assert first["type"] == "conversation" and first["token"]
    assert not await Conversation.objects.filter(pk=first["id"]).aexists()
    # The draft holds what the row will hold.
    draft = await drafts.find(conversation_id=first["id"], token=first["token"])
    assert (draft.language, draft.region) == ("de", "Bayern")
    # Nothing reached the console group.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(console), 0.3)


async def test_the_first_message_stores_the_conversation_and_tells_the_console(connect, worker):
    layer, console = await console_listener()
    client, first = await connect("lang=de&region=Bayern&tz=Europe%2FBerlin")
    await client.send({"type": "message", "text": "Hallo", "client_id": "c1"})
    ack = await client.receive()
    assert ack["type"] == "message.ack"
    conversation = await Conversation.objects.aget(pk=first["id"])
    assert (conversation.language, conversation.region, conversation.timezone) == (
        "de",
        "Bayern",
        "Europe/Berlin",
    )
    assert conversation.token_hash != first["token"] and len(conversation.token_hash) == 64
    event = await asyncio.wait_for(layer.receive(console), 5)
    assert event == group_events.console_update(conversation_id=first["id"], reason="new")
    # Stored: the draft is gone.
    assert await get_redis().get(drafts._key(first["id"])) is None
    await client.answer()


async def test_a_second_tab_before_any_message_joins_the_same_conversation(connect, worker):
    one, first = await connect()
    two, resumed = await connect(f"conversation={first['id']}&token={first['token']}")
    assert resumed["type"] == "conversation" and resumed["resumed"] is True
    assert resumed["id"] == first["id"]
    history = await two.receive()
    assert history == {"type": "history", "messages": []}
    # Tab one speaks: the conversation is stored, and both tabs see the one answer.
    await one.send({"type": "message", "text": "From tab one", "client_id": "a"})
    done_one = (await one.answer())[-1]
    done_two = (await two.answer())[-1]
    assert done_one["message_id"] == done_two["message_id"]
    # Tab two, still holding the draft, speaks: the stored conversation is used, not a copy.
    await two.send({"type": "message", "text": "From tab two", "client_id": "b"})
    ack = await two.receive_until(lambda f: f["type"] == "message.ack")
    assert ack[-1]["client_id"] == "b"
    await two.answer()
    assert await Conversation.objects.filter(pk=first["id"]).acount() == 1
    texts = [
        m.text
        async for m in Message.objects.filter(
            conversation_id=first["id"], role=Message.Role.CUSTOMER
        ).order_by("id")
    ]
    assert texts == ["From tab one", "From tab two"]


async def test_a_draft_needs_its_token_and_a_lost_draft_is_not_found(connect):
    _, first = await connect()
    wrong, refused = await connect(f"conversation={first['id']}&token=not-the-token")
    assert refused["type"] == "error" and refused["code"] == "conversation_not_found"
    await get_redis().delete(drafts._key(first["id"]))  # e.g. Redis restarted
    _, lost = await connect(f"conversation={first['id']}&token={first['token']}")
    assert lost["type"] == "error" and lost["code"] == "conversation_not_found"


async def test_a_hand_off_request_as_first_frame_stores_the_conversation(connect, worker):
    client, first = await connect()
    await client.send({"type": "handoff.request"})
    ack = await client.receive()
    assert ack["type"] == "handoff.ack"
    conversation = await Conversation.objects.aget(pk=first["id"])
    assert conversation.status == Conversation.Status.WAITING
