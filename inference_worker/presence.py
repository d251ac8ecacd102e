"""Which inference workers are alive: each beats a score into one Redis sorted set.

A consumer asks before sending a request, so when no worker is up the customer gets the
fallback answer at once instead of after the first-token deadline.
"""

import time

from django.conf import settings
from redis.asyncio import Redis

KEY = "inference:workers"


async def beat(redis: Redis, worker: str) -> None:
    now = time.time()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(KEY, {worker: now})
        # Forget workers that died without saying goodbye.
        pipe.zremrangebyscore(KEY, "-inf", now - 10 * settings.INFERENCE["WORKER_TTL_SECONDS"])
        await pipe.execute()


async def leave(redis: Redis, worker: str) -> None:
    await redis.zrem(KEY, worker)


async def live_workers(redis: Redis) -> int:
    since = time.time() - settings.INFERENCE["WORKER_TTL_SECONDS"]
    return await redis.zcount(KEY, since, "+inf")
