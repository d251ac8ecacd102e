"""The one place Redis clients are built: pools that wait for a connection, a wait that runs out
told apart from a Redis that cannot be reached, one size setting, one client per event loop."""

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from runtime import redis_client
from runtime.channel_layer import DeskChannelLayer
from runtime.redis_client import (
    PoolExhausted,
    async_client,
    get_redis,
    get_sync_redis,
    sync_client,
)


async def test_a_command_waits_for_a_busy_pool_then_gives_up_as_exhausted():
    client = async_client(max_connections=1, pool_timeout=0.3)
    try:
        pool = client.connection_pool
        held = await pool.get_connection()

        async def release_soon():
            await asyncio.sleep(0.1)  # another command's round trip, a slow one
            await pool.release(held)

        # A connection that comes free in time is waited for: the command succeeds.
        released = asyncio.create_task(release_soon())
        assert await client.ping() is True
        await released
        held = await pool.get_connection()
        started = time.monotonic()
        with pytest.raises(PoolExhausted) as raised:
            await client.ping()
        assert 0.25 <= time.monotonic() - started < 1.0  # the pool's timeout, not at once
        # redis-py's own class for a full pool; code that only knows RedisError (the channel
        # layer, the worker) handles it as before.
        assert isinstance(raised.value, MaxConnectionsError)
        await pool.release(held)
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_a_sync_pool_that_stays_busy_gives_up_as_exhausted():
    client = sync_client(max_connections=1, pool_timeout=0.2)
    held = client.connection_pool.get_connection()
    try:
        with pytest.raises(PoolExhausted):
            client.ping()
    finally:
        client.connection_pool.release(held)
    assert client.ping() is True
    client.close()


async def test_an_unreachable_redis_is_not_an_exhausted_pool(tmp_path):
    url = f"unix://{tmp_path}/nobody-listens.sock"
    client = async_client(url, max_connections=1)
    try:
        with pytest.raises(RedisConnectionError) as raised:
            await client.ping()
        assert not isinstance(raised.value, MaxConnectionsError)
    finally:
        await client.aclose()
    with pytest.raises(RedisConnectionError) as raised:
        sync_client(url, max_connections=1).ping()
    assert not isinstance(raised.value, MaxConnectionsError)


async def test_every_pool_is_sized_by_one_setting_and_sends_no_driver_info(settings):
    configured = settings.REDIS_MAX_CONNECTIONS
    # The configured channel layer takes the setting's figure.
    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["max_connections"] == configured
    settings.REDIS_MAX_CONNECTIONS = 7
    layer = DeskChannelLayer(hosts=[{"address": settings.REDIS_URL}])
    pools = [async_client().connection_pool, sync_client().connection_pool, layer.create_pool(0)]
    for pool in pools:
        assert isinstance(pool, redis_client._AsyncPool | redis_client._SyncPool)
        assert pool.max_connections == 7
        assert pool.timeout == redis_client.POOL_TIMEOUT
        assert pool.connection_kwargs["driver_info"] is redis_client.DRIVER_INFO is None


async def test_one_asyncio_client_per_event_loop():
    mine = get_redis()
    assert get_redis() is mine

    async def other_loop():
        client = get_redis()
        try:
            return client, await client.ping()
        finally:
            await client.aclose()

    theirs, answered = await asyncio.to_thread(asyncio.run, other_loop())
    assert theirs is not mine and answered is True
    assert await mine.ping() is True


def test_one_sync_client_per_url(settings, tmp_path):
    shared = get_sync_redis()
    assert get_sync_redis() is shared and shared.ping() is True
    settings.REDIS_URL = f"unix://{tmp_path}/elsewhere.sock"
    assert get_sync_redis() is not shared
