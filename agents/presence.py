"""Which agents are online: each open console socket beats its score into a Redis sorted set.

Members are "<user id>:<channel name>", so an agent with two tabs counts once and closing one
tab does not take the agent offline.
"""

import time
from functools import cache

import redis
from django.conf import settings

KEY = "console:agents"
TTL_SECONDS = 60  # the console pings every 20 s


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


def member(user_id: int, channel_name: str) -> str:
    return f"{user_id}:{channel_name}"


async def beat(client, user_id: int, channel_name: str) -> None:
    await client.zadd(KEY, {member(user_id, channel_name): time.time()})


async def leave(client, user_id: int, channel_name: str) -> None:
    await client.zrem(KEY, member(user_id, channel_name))


def online_agent_ids() -> set[int]:
    """Staff with a console open now (synchronous, for services)."""
    since = time.time() - TTL_SECONDS
    try:
        members = _client().zrangebyscore(KEY, since, "+inf")
    except redis.RedisError:
        return set()
    return {int(m.split(":", 1)[0]) for m in members}
