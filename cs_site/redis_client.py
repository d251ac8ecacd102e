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


# As the channel layer's pools (cs_site/channel_layer.py): when every connection is busy, a
# command waits up to POOL_TIMEOUT seconds for one instead of failing at once (redis-py's
# default pool raises "Too many connections" at 100, which a burst of answers reaches).
MAX_CONNECTIONS = 200
POOL_TIMEOUT = 5.0

# No CLIENT SETINFO (the library's name and version, shown by CLIENT LIST): left to redis-py,
# every new connection looks its version up in the installed packages' metadata, on the event
# loop (measured: 4 % of Daphne's time while 150 conversations started), and servers before
# Redis 7.2 (Debian 12 ships 7.0) refuse the command with an error that redis-py swallows,
# leaving its traceback as a reference cycle for the garbage collector: two a connection, the
# larger part of what a burst of closing sockets left to collect.
DRIVER_INFO = None


def get_redis() -> redis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        pool = redis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, decode_responses=True, max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT, driver_info=DRIVER_INFO)
        client = redis.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True  # aclose() closes the pool with the client
        _clients[loop] = client
    return client
