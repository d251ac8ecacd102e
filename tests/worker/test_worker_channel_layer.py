"""The desk's channel layer against a real Redis: channels-redis semantics, one round trip per
send, capacities by pattern, expiry, groups, and pools that wait instead of failing."""

import asyncio
import time

import pytest
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from runtime.channel_layer import _RECEIVE_SCRIPT, DeskChannelLayer
from runtime.redis_client import get_redis
from tests.waiting import poll
from tests.worker.helpers import layer, url


async def test_the_configured_layer_is_the_desk_layer_with_its_capacities():
    configured = get_channel_layer()
    assert isinstance(configured, DeskChannelLayer)
    reply = await configured.new_channel()
    assert configured.get_capacity(reply) == 20_000  # every reply channel of a process
    assert configured.get_capacity(settings.INFERENCE["CHANNEL"]) == 1000
    assert configured.get_capacity("something.else") == 100
    assert configured.receive_buffer[reply].maxsize == 1000
    del configured.receive_buffer[reply]


async def test_send_and_receive_on_shared_and_process_local_channels():
    desk = layer()
    await desk.send("shared", {"type": "hello", "n": 1})
    assert await desk.receive("shared") == {"type": "hello", "n": 1}
    first, second = await desk.new_channel(), await desk.new_channel()
    await desk.send(second, {"type": "to.second"})
    await desk.send(first, {"type": "to.first"})
    assert await desk.receive(first) == {"type": "to.first"}
    assert await desk.receive(second) == {"type": "to.second"}
    await desk.close_pools()


async def test_plain_channels_redis_reads_what_the_desk_layer_sends():
    # The wire format is channels-redis's own: a web process on the plain layer (as in a
    # rolling upgrade) reads the desk layer's messages.
    plain = RedisChannelLayer(hosts=[{"address": url(), "socket_timeout": 30}])
    desk = layer()
    reply = await plain.new_channel()
    await desk.send(reply, {"type": "inference.delta", "text": "hé"})
    assert await plain.receive(reply) == {"type": "inference.delta", "text": "hé"}
    await plain.send("shared", {"type": "back"})
    assert await desk.receive("shared") == {"type": "back"}
    await desk.close_pools()
    await plain.close_pools()


async def test_a_send_is_one_round_trip():
    desk = layer()
    await desk.send("warm", {"type": "x"})  # a fresh Redis learns the script once
    connection = desk.connection(0)
    commands = []
    execute = connection.execute_command

    async def counting(*args, **options):
        commands.append(args[0])
        return await execute(*args, **options)

    connection.execute_command = counting
    await desk.send("warm", {"type": "y"})
    await desk.send(await desk.new_channel(), {"type": "z"})
    assert commands == ["EVALSHA", "EVALSHA"]
    await desk.close_pools()


async def test_a_full_channel_raises_channel_full_and_process_channels_share_one_key():
    desk = layer(capacity=2, channel_capacity={"*!*": 3})
    await desk.send("shared", {"type": "a"})
    await desk.send("shared", {"type": "b"})
    with pytest.raises(ChannelFull):
        await desk.send("shared", {"type": "c"})
    assert await get_redis().zcard("asgishared") == 2  # the refused one was not added
    # Three sockets of one process: one key, one capacity.
    sockets = [await desk.new_channel() for _ in range(3)]
    for index, channel in enumerate(sockets):
        await desk.send(channel, {"type": "m", "i": index})
    with pytest.raises(ChannelFull):
        await desk.send(await desk.new_channel(), {"type": "m"})
    # Reading frees room again.
    assert await desk.receive("shared") == {"type": "a"}
    await desk.send("shared", {"type": "c"})
    await desk.close_pools()


async def test_messages_expire_and_the_key_with_them():
    desk = layer(expiry=1, capacity=1)
    await desk.send("short", {"type": "old"})
    assert 0 < await get_redis().ttl("asgishort") <= 1

    async def expired() -> bool:
        return not await get_redis().exists("asgishort")

    await poll(expired, timeout=5)
    # The expired message no longer counts against the capacity, and it is gone.
    await desk.send("short", {"type": "new"})
    assert await desk.receive("short") == {"type": "new"}
    await desk.close_pools()


async def test_groups_still_work():
    desk = layer()
    local, shared = await desk.new_channel(), "group-member"
    await desk.group_add("watchers", local)
    await desk.group_add("watchers", shared)
    assert 86000 < await get_redis().ttl("asgi:group:watchers") <= 86400
    await desk.group_send("watchers", {"type": "news", "n": 1})
    assert await desk.receive(local) == {"type": "news", "n": 1}
    assert await desk.receive(shared) == {"type": "news", "n": 1}
    await desk.group_discard("watchers", shared)
    await desk.group_send("watchers", {"type": "news", "n": 2})
    assert await desk.receive(local) == {"type": "news", "n": 2}
    assert await get_redis().zcard("asgigroup-member") == 0  # the member that left got none
    await desk.close_pools()


async def test_a_group_send_reaches_every_member_but_the_excluded_ones():
    desk, other_process = layer(capacity=1), layer()
    one, two = await desk.new_channel(), await desk.new_channel()  # one process's key
    elsewhere, full = await other_process.new_channel(), "full-member"
    for channel in (one, two, elsewhere, full):
        await desk.group_add("conversation.x", channel)
    await desk.send(full, {"type": "already waiting"})  # capacity 1: full

    await desk.group_send("conversation.x", {"type": "answer.started"}, exclude=(two,))
    assert await desk.receive(one) == {"type": "answer.started"}
    assert await other_process.receive(elsewhere) == {"type": "answer.started"}
    assert await other_process.receive(full) == {"type": "already waiting"}
    assert await get_redis().zcard("asgifull-member") == 0  # the full member got none
    # The excluded channel shares the process's key with `one`: it got nothing (one
    # message, for `one` only, went to that key).
    await desk.send(two, {"type": "next"})
    assert await desk.receive(two) == {"type": "next"}

    # Everyone excluded, or nobody there: nothing is sent at all.
    await desk.group_send("conversation.x", {"type": "x"}, exclude=(one, two, elsewhere, full))
    await desk.group_send("conversation.nobody", {"type": "x"})
    for process_key in (desk.non_local_name(one), other_process.non_local_name(elsewhere)):
        assert await get_redis().zcard("asgi" + process_key) == 0
    assert await get_redis().zcard("asgifull-member") == 0
    await desk.close_pools()
    await other_process.close_pools()


async def test_a_group_send_of_the_desk_layer_reaches_a_stock_channels_redis_reader():
    """Processes of an older release (channels-redis's own layer) during a rolling update."""
    desk = layer()
    stock = RedisChannelLayer(hosts=[url()])
    member = await stock.new_channel()
    await desk.group_add("conversation.y", member)
    await desk.group_send("conversation.y", {"type": "conv.status", "status": "human"})
    assert await stock.receive(member) == {"type": "conv.status", "status": "human"}
    await desk.close_pools()
    await stock.close_pools()


async def test_a_burst_larger_than_the_pool_waits_for_connections():
    desk = layer(hosts=[{"address": url(), "max_connections": 2, "pool_timeout": 5}], capacity=1000)
    await asyncio.gather(*(desk.send("burst", {"type": "n", "i": i}) for i in range(200)))
    assert await get_redis().zcard("asgiburst") == 200
    assert len(desk.connection(0).connection_pool._in_use_connections) == 0
    await desk.close_pools()


async def test_a_send_that_finds_no_connection_in_time_fails_as_a_redis_error():
    desk = layer(
        hosts=[{"address": url(), "max_connections": 1, "pool_timeout": 0.2, "socket_timeout": 30}]
    )
    waiting = asyncio.create_task(desk.receive("idle"))  # holds the one connection in BZPOPMIN
    await poll(lambda: desk.connection(0).connection_pool._in_use_connections)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await desk.send("other", {"type": "x"})
    assert 0.15 < time.monotonic() - started < 2
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    await desk.close_pools()


async def test_a_send_with_its_own_capacity_is_counted_and_queued_atomically():
    layer = get_channel_layer()
    results = await asyncio.gather(
        *(layer.send("bounded", {"type": "x", "n": n}, capacity=3) for n in range(20)),
        return_exceptions=True,
    )
    assert sum(result is None for result in results) == 3
    assert all(isinstance(r, ChannelFull) for r in results if r is not None)
    await layer.receive("bounded")
    await layer.send("bounded", {"type": "x", "n": "after"}, capacity=3)  # room again
    with pytest.raises(ChannelFull):
        await layer.send("bounded", {"type": "x"}, capacity=3)
    await layer.send("bounded", {"type": "x"})  # the channel's own capacity (100) still holds


async def test_a_process_receives_its_channels_in_batches_in_order(monkeypatch):
    layer = get_channel_layer()
    channels = [await layer.new_channel() for _ in range(5)]
    for n in range(100):
        for channel in channels:
            await layer.send(channel, {"type": "x", "n": n})
    batches = 0
    take = layer._take_batch

    async def counted(*args):
        nonlocal batches
        batches += 1
        return await take(*args)

    monkeypatch.setattr(layer, "_take_batch", counted)

    async def all_of(channel):
        return [(await layer.receive(channel))["n"] for _ in range(100)]

    received = await asyncio.wait_for(asyncio.gather(*(all_of(c) for c in channels)), 10)
    assert received == [list(range(100))] * 5  # nothing lost, each channel in order
    assert batches <= 10  # 500 messages in a few round trips, not 500


async def test_a_batch_cut_short_by_a_cancellation_is_received_next_time():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for n in range(3):
        await layer.send(channel, {"type": "x", "n": n})
    key = layer.prefix + layer.non_local_name(channel)
    connection = layer.connection(layer.consistent_hash(channel))
    # As if a receive was cancelled while its batch was on the wire: taken and backed up,
    # never handed to the process.
    layer._batch_in_flight.add(key)
    await connection.eval(_RECEIVE_SCRIPT, 2, key, layer._backup_channel_name(key), 10, "1")
    assert await connection.zcard(key) == 0
    got = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(3)]
    assert got == [0, 1, 2]


async def test_a_receiver_cancelled_as_a_message_arrives_loses_nothing(monkeypatch):
    # A receiver blocked on an idle process key pops the first message that arrives.
    # Cancelled right after the pop, before it could hand the message over (an answer's
    # receiver ends while the process streams others), it must not take the message with it.
    desk = layer()
    listening, other = await desk.new_channel(), await desk.new_channel()
    receiver = None
    real_wait = DeskChannelLayer._wait_for_arrival

    async def wait_then_cancelled(self, *args, **kwargs):
        popped = await real_wait(self, *args, **kwargs)
        if popped[0] and receiver is not None:
            receiver.cancel()  # lands before the message is handed over
            await asyncio.sleep(0)
        return popped

    monkeypatch.setattr(DeskChannelLayer, "_wait_for_arrival", wait_then_cancelled)
    receiver = asyncio.create_task(desk.receive(listening))
    await asyncio.sleep(0.2)  # blocked in BZPOPMIN on the idle key
    await desk.send(other, {"type": "for.other"})
    with pytest.raises(asyncio.CancelledError):
        await receiver
    monkeypatch.setattr(DeskChannelLayer, "_wait_for_arrival", real_wait)
    assert await asyncio.wait_for(desk.receive(other), 5) == {"type": "for.other"}
    await desk.close_pools()


async def test_a_receiver_cancelled_while_it_waits_leaves_the_next_message_to_the_next_one():
    # A process's receivers share one blocked pop: whoever holds the receive lock waits in
    # BZPOPMIN for all of them. When that receiver is cancelled while it waits (an answer's
    # receiver ends at the end of every answer), its pop stays blocked in Redis, and Redis
    # serves blocked pops first come, first served: the next message goes to it. The
    # receiver that takes the lock over (here the only other one, as a customer's socket is
    # when its process has no other) must get that message, not wait for one more to come.
    desk = layer()
    ending, staying = await desk.new_channel(), await desk.new_channel()
    receiver = asyncio.create_task(desk.receive(ending))
    await asyncio.sleep(0.2)  # holds the receive lock, blocked in BZPOPMIN on the idle key
    waiting = asyncio.create_task(desk.receive(staying))
    await asyncio.sleep(0.1)  # waits for the lock or its buffer
    receiver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiver
    await asyncio.sleep(0.2)  # the lock passed on: `staying` receives for the process now
    await desk.send(staying, {"type": "for.staying"})
    assert await asyncio.wait_for(waiting, 2) == {"type": "for.staying"}
    # Nothing was lost or doubled: the next messages are received as usual, in order.
    for n in range(3):
        await desk.send(staying, {"type": "next", "n": n})
    got = [(await asyncio.wait_for(desk.receive(staying), 2))["n"] for _ in range(3)]
    assert got == [0, 1, 2]
    await desk.close_pools()


async def test_a_process_that_keeps_up_costs_one_round_trip_per_message(monkeypatch):
    # One answer streaming to a process that waits for it: every delta wakes the blocked pop.
    # The pop's message is delivered as it is (not put back and read again), and a pop with
    # nothing behind it sends the next receive straight back to waiting: one round trip a
    # delta.
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

    receiving, sending = layer(), layer()
    channel = await receiving.new_channel()
    await sending.send(channel, {"type": "warm"})  # a fresh Redis learns the scripts once
    await receiving.receive(channel)
    pool = receiving.connection(receiving.consistent_hash(channel)).connection_pool
    commands = []  # one entry per round trip: a command, or a pipeline's commands joined
    real_execute, real_pipeline_execute = Redis.execute_command, Pipeline.execute

    async def counting(self, *args, **options):
        if self.connection_pool is pool:
            commands.append(args[0])
        return await real_execute(self, *args, **options)

    async def counting_pipeline(self, *args, **options):
        if self.connection_pool is pool:
            commands.append("+".join(c[0][0] for c in self.command_stack))
        return await real_pipeline_execute(self, *args, **options)

    monkeypatch.setattr(Redis, "execute_command", counting)
    monkeypatch.setattr(Pipeline, "execute", counting_pipeline)
    per_message = []
    for n in range(4):
        receiver = asyncio.create_task(receiving.receive(channel))
        await poll(lambda: "BZPOPMIN+ZCARD" in commands, timeout=5)
        await asyncio.sleep(0.02)  # the customer reads; the next delta comes a little later
        await sending.send(channel, {"type": "x", "n": n})
        assert (await asyncio.wait_for(receiver, 5))["n"] == n
        per_message.append(list(commands))
        commands.clear()
    # The first pop follows a look for a batch; none left anything behind it, so every pop
    # after it is the receive's only round trip.
    assert per_message == [["EVALSHA", "BZPOPMIN+ZCARD"]] + [["BZPOPMIN+ZCARD"]] * 3

    # A burst meets a process that was keeping up: one pop finds the others behind it, and
    # they are read in batches.
    for n in range(100):
        await sending.send(channel, {"type": "burst", "n": n})
    got = [(await asyncio.wait_for(receiving.receive(channel), 5))["n"] for _ in range(100)]
    assert got == list(range(100))
    assert commands[0] == "BZPOPMIN+ZCARD" and commands[1:] == ["EVALSHA"]
    await receiving.close_pools()
    await sending.close_pools()
