"""Recent turns of each conversation, cached in Redis and rebuilt from the database on a miss.

The cache holds the last MEMORY_TURNS messages as JSON in a Redis list with a TTL. It is only
ever appended to when it already exists (RPUSHX), so a cold conversation is rebuilt whole from
the database, the source of truth, and losing Redis loses nothing.
"""

import json
import logging
import re

from django.conf import settings
from redis.exceptions import RedisError

from chat import selectors
from chat.models import Message
from runtime.aio import db
from runtime.redis_client import get_redis

log = logging.getLogger(__name__)


def _key(conversation_id) -> str:
    return f"chat:turns:{conversation_id}"


def turn_of(message: Message) -> dict:
    return {"id": message.id, "role": message.role, "text": message.text}


def previous_customer_text(turns: list[dict]) -> str:
    """The customer's message before the newest turn of `recent_turns` ("" when there is
    none): a follow-up's context ("And to Germany?"), or a detail given one message earlier."""
    said = [turn["text"] for turn in turns[:-1] if turn["role"] == Message.Role.CUSTOMER]
    return said[-1] if said else ""


# A message that only makes sense after the one before it: "And to Germany?", "What about
# Japan?", "那寄到中国呢？". Searched alone it finds whatever its one noun names (customs for
# 中国), so it is searched together with the customer's previous message.
_FOLLOW_UP = re.compile(
    r"^\s*(?:and|what about|how about|what if|and if|and what about)\b|^\s*那|呢\s*[？?]?\s*$",
    re.IGNORECASE,
)


def is_follow_up(text: str) -> bool:
    return bool(_FOLLOW_UP.search(text))


async def remember(message: Message) -> None:
    """Append a stored message to its conversation's cache, if the cache is warm."""
    if message.role not in selectors.TURN_ROLES or not message.text:
        return
    limit = settings.CHAT["MEMORY_TURNS"]
    key = _key(message.conversation_id)
    # A conversation's first message starts its cache, so the first answer finds it warm;
    # later ones only extend a warm cache (a cold one is rebuilt whole from the database).
    pipe_push = "rpush" if getattr(message, "opens_conversation", False) else "rpushx"
    try:
        async with get_redis().pipeline(transaction=True) as pipe:
            getattr(pipe, pipe_push)(key, json.dumps(turn_of(message)))
            pipe.ltrim(key, -limit, -1)
            pipe.expire(key, settings.CHAT["MEMORY_TTL_SECONDS"])  # no-op on a cold key
            await pipe.execute()
    except RedisError as exc:
        # The next read rebuilds from the database; a dropped cache write loses nothing.
        log.warning(
            "turn cache write failed for %s (%s: %s)",
            message.conversation_id,
            type(exc).__name__,
            exc,
        )
        await forget(message.conversation_id)


async def forget(conversation_id) -> None:
    try:
        await get_redis().delete(_key(conversation_id))
    except RedisError as exc:
        log.warning(
            "turn cache delete failed for %s (%s: %s)", conversation_id, type(exc).__name__, exc
        )


async def recent_turns(conversation_id, *, newest_id: int | None = None) -> list[dict]:
    """The last MEMORY_TURNS messages, oldest first.

    `newest_id` is the message the caller just stored: if the cache does not end with it
    (a write raced a rebuild, or was lost), the cache is rebuilt rather than trusted.
    """
    limit = settings.CHAT["MEMORY_TURNS"]
    key = _key(conversation_id)
    redis = get_redis()
    try:
        cached = await redis.lrange(key, -limit, -1)
    except RedisError as exc:
        log.warning(
            "turn cache read failed for %s (%s: %s)", conversation_id, type(exc).__name__, exc
        )
        cached = []
    turns = [json.loads(item) for item in cached]
    if turns and (newest_id is None or turns[-1]["id"] == newest_id):
        return turns

    turns = await db(selectors.recent_turns)(conversation_id=conversation_id, limit=limit)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if turns:
                pipe.rpush(key, *[json.dumps(turn) for turn in turns])
                pipe.expire(key, settings.CHAT["MEMORY_TTL_SECONDS"])
            await pipe.execute()
    except RedisError as exc:
        log.warning(
            "turn cache rebuild failed for %s (%s: %s)", conversation_id, type(exc).__name__, exc
        )
    return turns
