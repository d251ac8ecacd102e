"""One asyncio Redis client per event loop, for the recent-turn cache and worker presence.

redis-py's asyncio connections belong to the loop that opened them; Daphne runs one loop, but
tests and management commands may run several in one process, so the client is kept per loop.
"""

import asyncio
import weakref

import redis.asyncio as redis
from django.conf import settings

_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.Redis]" = (
    weakref.WeakKeyDictionary()
)


def get_redis() -> redis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
        _clients[loop] = client
    return client
