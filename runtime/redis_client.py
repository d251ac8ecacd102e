"""Every Redis client of the desk is built here, on a pool that waits for a free connection.

redis-py's default pool raises MaxConnectionsError ("Too many connections") the moment 100
connections are in use, which one busy process reaches (a burst of answers, a hundred sockets
sending at once). These pools make a command wait for a connection instead, up to a bounded
time, then raise PoolExhausted: still a MaxConnectionsError (a RedisError like any other for
code that does not care), and never mistaken for a Redis that cannot be reached, which is a
plain ConnectionError or TimeoutError. Each pool holds at most settings.REDIS_MAX_CONNECTIONS.

- `get_redis()`: this event loop's shared asyncio client (recent turns, drafts, claims,
  presence); `get_sync_redis()`: the shared synchronous one (knowledge version, agents online).
- `async_client`, `async_pool`, `sync_client`: new ones with options of their own (the rate
  limits' short timeouts, the channel layer's hosts).

Nothing here imports the desk's apps: redis-py and Django's settings only.
"""

import asyncio
import queue
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

# How long a command waits for a connection when every one of its pool's is busy. Commands
# hold one for a round trip (~0.1 ms), so a wait this long means a process far past what its
# pool can carry, or a Redis that has stopped answering.
POOL_TIMEOUT = 5.0

# The shared synchronous client serves calls that block a thread (a view's, the ORM's): a Redis
# that hangs must not hold that thread for more than this.
SYNC_SOCKET_TIMEOUT = 2.0

# No CLIENT SETINFO (the library's name and version, shown by CLIENT LIST): left to redis-py,
# every new connection looks its version up in the installed packages' metadata, on the event
# loop (measured: 4 % of Daphne's time while 150 conversations started), and servers before
# Redis 7.2 (Debian 12 ships 7.0) refuse the command with an error that redis-py swallows,
# leaving its traceback as a reference cycle for the garbage collector: two a connection, the
# larger part of what a burst of closing sockets left to collect.
DRIVER_INFO = None


class PoolExhausted(MaxConnectionsError):
    """No connection of the pool came free within its timeout: the process is busy, Redis may
    well be fine."""


def _exhausted(pool) -> PoolExhausted:
    return PoolExhausted(
        f"no Redis connection came free within {pool.timeout} s "
        f"(all {pool.max_connections} of the pool in use)"
    )


class _AsyncPool(aioredis.BlockingConnectionPool):
    async def get_connection(self, *args, **kwargs):
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as exc:
            # redis-py raises the same ConnectionError for a wait that ran out as for a server
            # that refuses; only the former comes from the wait's own timeout.
            if isinstance(exc.__cause__, asyncio.TimeoutError):
                raise _exhausted(self) from exc
            raise


class _SyncPool(redis.BlockingConnectionPool):
    def get_connection(self, *args, **kwargs):
        try:
            return super().get_connection(*args, **kwargs)
        except RedisConnectionError as exc:
            if isinstance(exc.__context__, queue.Empty):  # the wait's queue stayed empty
                raise _exhausted(self) from exc
            raise


def async_pool(
    url: str | None = None,
    *,
    max_connections: int | None = None,
    pool_timeout: float = POOL_TIMEOUT,
    **options,
) -> aioredis.BlockingConnectionPool:
    """A waiting asyncio pool. `options` are redis-py's connection options (socket_timeout,
    retry, decode_responses...); its connections belong to the event loop that opens them."""
    options.setdefault("driver_info", DRIVER_INFO)
    return _AsyncPool.from_url(
        url or settings.REDIS_URL,
        max_connections=max_connections or settings.REDIS_MAX_CONNECTIONS,
        timeout=pool_timeout,
        **options,
    )


def async_client(
    url: str | None = None, *, decode_responses: bool = True, **pool_options
) -> aioredis.Redis:
    """A new asyncio client on a pool of its own (see `async_pool`); aclose() closes both."""
    client = aioredis.Redis(
        connection_pool=async_pool(url, decode_responses=decode_responses, **pool_options)
    )
    client.auto_close_connection_pool = True
    return client


def sync_client(
    url: str | None = None,
    *,
    max_connections: int | None = None,
    pool_timeout: float = POOL_TIMEOUT,
    decode_responses: bool = True,
    **options,
) -> redis.Redis:
    """A new synchronous client on a waiting pool of its own (thread-safe)."""
    options.setdefault("driver_info", DRIVER_INFO)
    pool = _SyncPool.from_url(
        url or settings.REDIS_URL,
        max_connections=max_connections or settings.REDIS_MAX_CONNECTIONS,
        timeout=pool_timeout,
        decode_responses=decode_responses,
        **options,
    )
    return redis.Redis(connection_pool=pool)


# redis-py's asyncio connections belong to the loop that opened them; Daphne runs one loop, but
# tests and management commands may run several in one process, so the client is kept per loop.
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)
# Per URL: the tests point REDIS_URL at their own server after start-up.
_sync_clients: dict[str, redis.Redis] = {}


def get_redis() -> aioredis.Redis:
    """This event loop's asyncio client (strings, not bytes)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = async_client()
    return client


def get_sync_redis() -> redis.Redis:
    """The process's synchronous client for settings.REDIS_URL (strings, not bytes)."""
    client = _sync_clients.get(settings.REDIS_URL)
    if client is None:
        client = _sync_clients.setdefault(
            settings.REDIS_URL,
            sync_client(
                socket_timeout=SYNC_SOCKET_TIMEOUT, socket_connect_timeout=SYNC_SOCKET_TIMEOUT
            ),
        )
    return client
