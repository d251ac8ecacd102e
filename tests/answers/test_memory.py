"""The recent-turn cache against a real Redis: warm appends, cold rebuilds, the database wins."""

import json

import pytest
from channels.db import database_sync_to_async

from chat import memory, services
from runtime.redis_client import get_redis

pytestmark = pytest.mark.django_db(transaction=True)


async def add(conversation, text, client_id):
    message, _ = await database_sync_to_async(services.message_add_customer)(
        conversation=conversation, text=text, client_id=client_id
    )
    await memory.remember(message)
    return message


async def test_cold_cache_is_rebuilt_from_the_database_then_appended(settings):
    settings.CHAT = {**settings.CHAT, "MEMORY_TURNS": 3, "MEMORY_TTL_SECONDS": 120}
    conversation, _ = await database_sync_to_async(services.conversation_start)()
    await add(conversation, "m0", "0")  # a new conversation's first message starts the cache
    key = f"chat:turns:{conversation.id}"
    assert [json.loads(x)["text"] for x in await get_redis().lrange(key, 0, -1)] == ["m0"]
    await get_redis().delete(key)  # gone (expired, Redis restarted)
    for i in range(1, 4):
        await add(conversation, f"m{i}", str(i))  # cache is cold: nothing is written
    assert await get_redis().exists(key) == 0
    turns = await memory.recent_turns(conversation.id)
    assert [t["text"] for t in turns] == ["m1", "m2", "m3"]
    assert 0 < await get_redis().ttl(key) <= 120
    newest = await add(conversation, "m4", "4")  # warm: appended and trimmed
    cached = [json.loads(x) for x in await get_redis().lrange(key, 0, -1)]
    assert [t["text"] for t in cached] == ["m2", "m3", "m4"]
    assert await memory.recent_turns(conversation.id, newest_id=newest.id) == cached


async def test_a_cache_missing_the_newest_message_is_rebuilt(settings):
    conversation, _ = await database_sync_to_async(services.conversation_start)()
    await add(conversation, "first", "1")
    await memory.recent_turns(conversation.id)  # warm
    message, _ = await database_sync_to_async(services.message_add_customer)(
        conversation=conversation, text="second", client_id="2"
    )  # stored, cache write lost
    turns = await memory.recent_turns(conversation.id, newest_id=message.id)
    assert [t["text"] for t in turns] == ["first", "second"]


async def test_losing_redis_data_loses_no_turn():
    conversation, _ = await database_sync_to_async(services.conversation_start)()
    await add(conversation, "a", "1")
    await memory.recent_turns(conversation.id)
    await get_redis().flushall()
    assert [t["text"] for t in await memory.recent_turns(conversation.id)] == ["a"]


@pytest.mark.parametrize(
    ("text", "follow_up"),
    [
        ("And to Germany?", True),
        ("What about Japan?", True),
        ("and if it was delivered in December?", True),
        ("那寄到中国呢？", True),
        ("那 Acorn Home 的台灯呢", True),
        ("How long does delivery to Japan take?", False),
        ("Android app crashes on start", False),
        ("寄到中国要几天？", False),
    ],
)
def test_a_follow_up_is_told_by_its_opening_or_its_closing_particle(text, follow_up):
    assert memory.is_follow_up(text) is follow_up
