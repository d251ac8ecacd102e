"""The inference workers' presence (inference_worker.presence) as this deployment's settings
describe it: how long a heartbeat counts (INFERENCE["WORKER_TTL_SECONDS"]) and where the
channel layer keeps a channel's waiting messages (CHANNEL_LAYERS' "prefix" and "expiry").

The settings are read at each call, not once at start-up, so the figures always match the
settings in force (tests change them).
"""

from django.conf import settings
from redis.asyncio import Redis

from inference_worker.presence import Beat, Capacity, WorkerPresence


def presence() -> WorkerPresence:
    layer = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    return WorkerPresence(
        ttl=settings.INFERENCE["WORKER_TTL_SECONDS"],
        channel_prefix=layer.get("prefix", "asgi"),
        channel_expiry=layer.get("expiry", 60),
    )


async def beat(
    redis: Redis,
    worker: str,
    slots: int = 1,
    turnover: float | None = None,
    free: int | None = None,
    *,
    queue_of: str | None = None,
) -> Beat:
    return await presence().beat(redis, worker, slots, turnover, free, queue_of=queue_of)


async def set_free(redis: Redis, worker: str, free: int) -> None:
    await presence().set_free(redis, worker, free)


async def leave(redis: Redis, worker: str) -> None:
    await presence().leave(redis, worker)


async def live_workers(redis: Redis) -> int:
    return await presence().live_workers(redis)


async def capacity(redis: Redis, channel: str) -> Capacity:
    return await presence().capacity(redis, channel)
