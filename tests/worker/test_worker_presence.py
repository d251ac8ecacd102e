"""Presence and capacity in Redis: live workers, their slots, and the queue before them."""

import contextlib
import time

from channels.layers import get_channel_layer
from django.conf import settings

from inference_worker import pool, presence
from runtime.redis_client import get_redis

CHANNEL = settings.INFERENCE["CHANNEL"]


async def test_capacity_counts_live_workers_their_slots_and_waiting_requests():
    redis = get_redis()
    assert (await pool.capacity(redis, CHANNEL)).counts() == (0, 0, 0)
    await pool.beat(redis, "gpu-a", 16)
    await pool.beat(redis, "gpu-b", 4)
    layer = get_channel_layer()
    for index in range(3):
        await layer.send(CHANNEL, {"type": "inference.request", "n": index})
    await layer.send("another-channel", {"type": "x"})  # not in this queue
    assert (await pool.capacity(redis, CHANNEL)).counts() == (2, 20, 3)
    assert (await pool.capacity(redis, CHANNEL)).queued == 3
    await layer.receive(CHANNEL)
    assert (await pool.capacity(redis, CHANNEL)).queued == 2


@contextlib.contextmanager
def round_trips(redis):
    """What reaches Redis through `redis` meanwhile: "pipeline" per pipeline, else commands."""
    calls = []
    original, execute = redis.pipeline, redis.execute_command

    def pipeline(*args, **kwargs):
        calls.append("pipeline")
        return original(*args, **kwargs)

    redis.pipeline = pipeline
    redis.execute_command = lambda *args, **kw: calls.append(args[0]) or execute(*args, **kw)
    try:
        yield calls
    finally:
        del redis.pipeline, redis.execute_command


async def test_capacity_is_one_round_trip():
    redis = get_redis()
    await pool.beat(redis, "gpu-a", 16)
    with round_trips(redis) as calls:
        await pool.capacity(redis, CHANNEL)
    assert calls == ["pipeline"]


async def test_a_beat_says_whether_the_worker_was_new_and_counts_the_queue_in_one_round_trip():
    redis = get_redis()
    layer = get_channel_layer()
    for index in range(2):
        await layer.send(CHANNEL, {"type": "inference.request", "n": index})
    with round_trips(redis) as calls:
        first = await pool.beat(redis, "gpu-a", 16, queue_of=CHANNEL)
    assert calls == ["pipeline"]
    assert first == presence.Beat(arrived=True, queued=2)
    # Beating again: known already. Without a channel, no count.
    assert await pool.beat(redis, "gpu-a", 16) == presence.Beat(arrived=False, queued=None)
    # Redis forgot it (a restart, or counted as gone): new again.
    await redis.zrem(presence.KEY, "gpu-a")
    assert (await pool.beat(redis, "gpu-a", 16, queue_of=CHANNEL)).arrived


async def test_silent_workers_stop_counting_and_are_forgotten_with_their_slots():
    redis = get_redis()
    ttl = settings.INFERENCE["WORKER_TTL_SECONDS"]
    await redis.zadd(presence.KEY, {"quiet": time.time() - ttl - 1, "dead": time.time() - 11 * ttl})
    await redis.hset(presence.SLOTS_KEY, mapping={"quiet": 8, "dead": 8})
    await pool.beat(redis, "alive", 2)
    # "quiet" missed its heartbeats: no longer live, not yet forgotten.
    assert (await pool.capacity(redis, CHANNEL)).counts() == (1, 2, 0)
    assert await pool.live_workers(redis) == 1
    assert set(await redis.zrange(presence.KEY, 0, -1)) == {"quiet", "alive"}
    assert set(await redis.hkeys(presence.SLOTS_KEY)) == {"quiet", "alive"}
    await pool.leave(redis, "alive")
    assert (await pool.capacity(redis, CHANNEL)).counts() == (0, 0, 0)
    assert set(await redis.hkeys(presence.SLOTS_KEY)) == {"quiet"}


async def test_expired_requests_do_not_count_as_waiting():
    redis = get_redis()
    layer = get_channel_layer()
    await layer.send(CHANNEL, {"type": "inference.request"})
    # One sent longer ago than the layer's expiry: channels-redis drops it at the next send.
    await redis.zadd("asgi" + CHANNEL, {b"stale": time.time() - 61})
    assert (await pool.capacity(redis, CHANNEL)).queued == 1


async def test_a_worker_beating_without_slots_counts_as_one():
    redis = get_redis()
    await redis.zadd(presence.KEY, {"old-release": time.time()})
    assert (await pool.capacity(redis, CHANNEL)).counts() == (1, 1, 0)


async def test_the_queue_admits_only_what_will_start_before_the_first_token_deadline():
    redis = get_redis()
    # Every slot busy (free=0): the queue is all that is left.
    await pool.beat(redis, "fast", 4, turnover=5.0, free=0)
    await pool.beat(redis, "slow", 12, turnover=25.0, free=0)
    layer = get_channel_layer()
    for index in range(3):
        await layer.send(CHANNEL, {"type": "inference.request", "n": index})
    room = await pool.capacity(redis, CHANNEL)
    assert room.turnover == (4 * 5.0 + 12 * 25.0) / 16  # 20 s per answer, per slot
    # Behind 3 others on 16 slots a request starts after about one turnover (20 s): in time
    # for a 30 s deadline (8 may wait), not for a 20 s one (only the one the next free slot
    # takes).
    assert room.queue_limit(queue_per_slot=1.0, first_token_timeout=30) == 8 > room.queued
    assert room.queue_limit(queue_per_slot=1.0, first_token_timeout=20) == 1 <= room.queued
    # Until answers have been timed, half the configured queue per slot.
    await pool.leave(redis, "fast")
    await pool.leave(redis, "slow")
    await pool.beat(redis, "new", 2, free=0)
    room = await pool.capacity(redis, CHANNEL)
    assert room.turnover is None and room.counts() == (1, 2, 3)
    assert room.queue_limit(queue_per_slot=1.0, first_token_timeout=30) == 1 <= room.queued
    assert room.queue_limit(queue_per_slot=4.0, first_token_timeout=30) == 4 > room.queued
    assert set(await redis.hkeys(presence.TURNOVER_KEY)) == set()  # left with their workers
    # With nobody waiting, a request goes to the next free slot however slow answers are.
    await pool.beat(redis, "crawling", 1, turnover=120.0, free=0)
    for _ in range(3):
        await layer.receive(CHANNEL)
    room = await pool.capacity(redis, CHANNEL)
    assert room.queued == 0
    assert room.queue_limit(queue_per_slot=1.0, first_token_timeout=30) == 1


async def test_free_slots_take_a_burst_at_once_on_top_of_the_queue():
    # An idle worker with 16 slots, answers lately slow (25 s per answer: behind the running
    # ones a queued request would barely start in time). A burst of 16 questions finds some of
    # its own requests still in the channel, not taken yet: they are for the free slots and
    # start at once, so as many as are free may be there.
    redis = get_redis()
    await pool.beat(redis, "idle", 16, turnover=25.0, free=16)
    layer = get_channel_layer()
    for index in range(10):
        await layer.send(CHANNEL, {"type": "inference.request", "n": index})
    room = await pool.capacity(redis, CHANNEL)
    assert room.free == 16 and room.queued == 10
    assert room.queue_limit(queue_per_slot=1.0, first_token_timeout=30) == 16 > room.queued
    # Once busy (its next beat says so), only the queue is left.
    await pool.beat(redis, "idle", 16, turnover=25.0, free=0)
    room = await pool.capacity(redis, CHANNEL)
    assert room.queue_limit(queue_per_slot=1.0, first_token_timeout=30) == 3 < room.queued
    await pool.leave(redis, "idle")
    assert await redis.hkeys(presence.FREE_KEY) == []
