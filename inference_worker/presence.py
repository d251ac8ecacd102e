"""Which inference workers are alive, how many requests they can run, and how many wait.

Each worker beats a score into one Redis sorted set and records its number of slots (requests
it runs at once) in a hash beside it. A consumer asks before sending a request, so when no
worker is up, or the queue already holds as many requests as the live workers can soon start,
the customer gets the fallback answer at once instead of after the first-token deadline.
"""

import time

from django.conf import settings
from redis.asyncio import Redis

KEY = "inference:workers"  # worker name → Unix time of its last heartbeat
SLOTS_KEY = "inference:slots"  # worker name → requests it runs at once


def _ttl() -> float:
    return settings.INFERENCE["WORKER_TTL_SECONDS"]


async def beat(redis: Redis, worker: str, slots: int = 1) -> None:
    now = time.time()
    forget_before = now - 10 * _ttl()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(KEY, {worker: now})
        pipe.hset(SLOTS_KEY, worker, slots)
        # Forget workers that died without saying goodbye, and their slots with them.
        pipe.zrangebyscore(KEY, "-inf", forget_before)
        pipe.zremrangebyscore(KEY, "-inf", forget_before)
        *_, gone, _ = await pipe.execute()
    if gone:
        await redis.hdel(SLOTS_KEY, *gone)


async def leave(redis: Redis, worker: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(KEY, worker)
        pipe.hdel(SLOTS_KEY, worker)
        await pipe.execute()


async def live_workers(redis: Redis) -> int:
    since = time.time() - _ttl()
    return await redis.zcount(KEY, since, "+inf")


def _channel_key(channel: str) -> str:
    # channels-redis keeps a channel's waiting messages in a sorted set named prefix+channel,
    # scored by the time each was sent.
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    return config.get("prefix", "asgi") + channel


def _waiting(pipe, channel: str, now: float) -> None:
    """Queue on `pipe` the count of messages waiting in `channel` that have not expired
    (channels-redis drops those sent more than `expiry` seconds ago on its next send)."""
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    expired_up_to = int(now) - int(config.get("expiry", 60))
    pipe.zcount(_channel_key(channel), f"({expired_up_to}", "+inf")


async def queue_length(redis: Redis, channel: str) -> int:
    """Requests waiting in the shared channel for a worker to take them."""
    async with redis.pipeline(transaction=False) as pipe:
        _waiting(pipe, channel, time.time())
        (queued,) = await pipe.execute()
    return queued


async def capacity(redis: Redis, channel: str) -> tuple[int, int, int]:
    """(live workers, their slots in all, requests waiting in `channel`), in one round trip."""
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(KEY, now - _ttl(), "+inf")
        pipe.hgetall(SLOTS_KEY)
        _waiting(pipe, channel, now)
        live, slots, queued = await pipe.execute()
    # A worker beating from an older release has no slots entry: count it as one slot.
    total_slots = sum(int(slots.get(name, 1)) for name in live)
    return len(live), total_slots, queued
