"""Which agents are online: each open console socket beats its score into a Redis sorted set.

Members are "<user id>:<channel name>", so an agent with two tabs counts once and closing one
tab does not take the agent offline. The set is kept by runtime.heartbeats, as the workers'
presence is: a console that vanished without leaving (its process was killed) counts as
offline TTL_SECONDS after its last beat, and any beat ten TTLs later removes it from Redis.
"""

import time

import redis

from runtime.heartbeats import Heartbeats
from runtime.redis_client import get_sync_redis

KEY = "console:agents"
TTL_SECONDS = 60  # the console pings every 20 s
CONSOLES = Heartbeats(KEY, TTL_SECONDS)


def member(user_id: int, channel_name: str) -> str:
    return f"{user_id}:{channel_name}"


async def beat(client, user_id: int, channel_name: str) -> None:
    async with client.pipeline(transaction=True) as pipe:
        CONSOLES.beat(pipe, member(user_id, channel_name), time.time())
        await pipe.execute()


async def leave(client, user_id: int, channel_name: str) -> None:
    async with client.pipeline(transaction=False) as pipe:
        CONSOLES.leave(pipe, member(user_id, channel_name))
        await pipe.execute()


def online_agent_ids() -> set[int]:
    """Staff with a console open now (synchronous, for services)."""
    try:
        with get_sync_redis().pipeline(transaction=False) as pipe:
            CONSOLES.live(pipe, time.time())
            (members,) = pipe.execute()
    except redis.RedisError:
        return set()
    return {int(m.split(":", 1)[0]) for m in members}
