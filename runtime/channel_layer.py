"""The desk's channel layer: channels-redis with one round trip per send and waiting pools.

channels-redis's `send` makes four round trips in a row (drop expired messages, count, add,
set expiry). Every streamed delta is a send, so on the per-delta hot path that is four times
the latency and four times the Redis commands needed. Here the same four steps run as one Lua
script: one round trip, and the capacity check and the add are atomic (no slight overshoot
under concurrent senders). Everything else (channel naming, '!' process-local channels,
serialization, receive, groups, capacity patterns) is channels-redis's own.

redis-py's default pool raises MaxConnectionsError once 100 connections are in use; a burst
of sends then fails outright. These pools (runtime.redis_client's) make a send wait for a free
connection instead, up to `pool_timeout` seconds (then PoolExhausted, a RedisError like any
other Redis failure). Both are set per host entry, by default settings.REDIS_MAX_CONNECTIONS
and runtime.redis_client.POOL_TIMEOUT:

    "hosts": [{"address": REDIS_URL, "max_connections": 200, "pool_timeout": 5}]
"""

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Collection

from channels.exceptions import ChannelFull
from channels_redis.core import BoundedQueue, RedisChannelLayer
from redis.exceptions import NoScriptError, RedisError

from runtime import redis_client
from runtime.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

# KEYS[1]: the channel's sorted set. ARGV: message, now (its score), the newest score that
# counts as expired, capacity, expiry in seconds. Returns 0 when the channel is full.
_SEND_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
_SEND_SHA = hashlib.sha1(_SEND_SCRIPT.encode()).hexdigest()

# One message to each of n channel keys (KEYS), as channels-redis's group_send does, in one
# script instead of a pipeline and a script. ARGV: n messages, n capacities, then now (the
# score), the newest score that counts as expired, expiry in seconds. Returns how many keys
# were full (their message is dropped, as channels-redis drops it).
_GROUP_SEND_SCRIPT = """
local n = #KEYS
local now, expired, expiry = ARGV[2 * n + 1], ARGV[2 * n + 2], ARGV[2 * n + 3]
local full = 0
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, expired)
    if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        full = full + 1
    end
end
return full
"""
_GROUP_SEND_SHA = hashlib.sha1(_GROUP_SEND_SCRIPT.encode()).hexdigest()

# KEYS[1]: a process's channel key, KEYS[2]: its backup. ARGV[1]: how many to take, ARGV[2]:
# "1" when the batch taken last time reached the process (forget it), "0" when it may not have
# (the receive was cancelled mid-call: put it back first, so nothing is lost). Takes the oldest
# messages, keeps a copy in the backup until the next call, and returns [member, score, ...].
_RECEIVE_SCRIPT = """
if ARGV[2] == '1' then
    redis.call('DEL', KEYS[2])
else
    local kept = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #kept, 2 do
        redis.call('ZADD', KEYS[1], kept[i + 1], kept[i])
    end
    redis.call('DEL', KEYS[2])
end
local taken = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[1]))
for i = 1, #taken, 2 do
    redis.call('ZADD', KEYS[2], taken[i + 1], taken[i])
end
return taken
"""
_RECEIVE_SHA = hashlib.sha1(_RECEIVE_SCRIPT.encode()).hexdigest()
RECEIVE_BATCH = 200  # messages one round trip may take for a process
_BUNDLE = "__desk_bundle__"  # a message that carries [[channel, message], ...] (send_bundle)


def _retrieve_exception(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class DeskChannelLayer(RedisChannelLayer):
    def __init__(self, *args, local_capacity: int | None = None, **kwargs):
        """`local_capacity`: messages one process-local channel may buffer in this process
        before its consumer reads them (channels-redis uses `capacity`, 100 by default, and
        silently drops the oldest beyond it)."""
        super().__init__(*args, **kwargs)
        self._batch_in_flight: set[str] = set()  # keys whose last batch may not have arrived
        self._keeping_up: set[str] = set()  # keys whose last pop left nothing behind it
        # Keys whose blocked pop lost its receiver (cancelled while it waited): the pop goes on
        # in Redis, and the process's next receive takes it over (see receive_single).
        self._pending_pops: dict[str, asyncio.Future] = {}
        self._sinks: dict[str, Callable[[dict], None]] = {}  # see attach()
        if local_capacity is not None:
            self.receive_buffer.default_factory = functools.partial(BoundedQueue, local_capacity)

    # --- receiving: a process's channels in batches ----------------------------------------
    #
    # Every channel of a process ("specific.<process>!<id>": its sockets and its answers) shares
    # one Redis key and one receive loop. channels-redis takes one message per loop, four round
    # trips each, so a process streaming many answers at once falls behind the deltas sent to
    # it, however idle its CPU. Here one round trip takes every waiting message (up to
    # RECEIVE_BATCH) and hands each to its channel's buffer. Shared channels ("inference",
    # taken by whichever worker is free) keep channels-redis's one-at-a-time receive.

    def attach(self, channel: str, sink: Callable[[dict], None]) -> None:
        """Hand every message of the process-local `channel` to `sink` (a plain function,
        e.g. an asyncio.Queue's put_nowait) the moment the batch holding it is read.

        channels-redis's receive() costs, per message and per waiting receiver, two new tasks,
        an asyncio.wait, a cancelled lock waiter and a lock hand-off; for an answer's channel
        (one delta every 40-100 ms, hundreds of answers per process) that was ~15 % of the
        process's CPU. A sink costs one call. Batches are still read by whoever is in
        receive() on a channel of this process (every socket and every answer run is), so
        the owner keeps a receiver running; nothing is read into the sink after detach()."""
        self._sinks[channel] = sink

    def detach(self, channel: str) -> None:
        self._sinks.pop(channel, None)

    async def receive_single(self, channel):
        if "!" not in channel:
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        key = self.prefix + channel
        connection = self.connection(self.consistent_hash(channel))
        while True:
            # redis-py can turn a cancellation that meets its read timeout into an empty
            # reply: without this check the loop would go on receiving for a cancelled task.
            raise_if_cancelled()
            waiting = self._take_pending_pop(key)
            # A process that keeps up (nothing was left behind its last pop: one answer
            # streaming, a delta every 40-100 ms) blocks at once; looking for a batch first
            # would find nothing and cost a round trip per delta. A pop that left messages
            # waiting sends the next receive back to batches. A batch cut short is always put
            # back first.
            if waiting is None and (key not in self._keeping_up or key in self._batch_in_flight):
                taken = await self._take_batch(connection, key)
                if taken:
                    # Messages for attached channels reach their sinks now, in order; the
                    # first of the others is returned below. A batch all for sinks: read on.
                    taken = self._to_sinks(taken)
                    if taken:
                        break
                    continue
            # Nothing waiting: block until something arrives and take it as a batch of one.
            # BZPOPMIN removes the message from Redis, so the pop is shielded (measured before
            # the shield: one delta in ~1,000 answers went missing mid-stream under load). A
            # receiver cancelled while it waits (an answer's receiver ends at the end of every
            # answer) leaves its pop blocked in Redis, which serves blocked pops first come,
            # first served: that pop takes the next message of the process. So the pop is not
            # dropped but left to the process's next receive, the receiver that takes the lock
            # over, which waits for it instead of starting one of its own; delivered into a
            # buffer instead, a message for that very receiver sat there unread until another
            # message woke it. The message is not put back and taken again: at one answer per
            # process that cost two more round trips per delta.
            if waiting is None:
                waiting = asyncio.ensure_future(self._wait_for_arrival(connection, key))
            try:
                taken, left = await asyncio.shield(waiting)
            except asyncio.CancelledError:
                self._keeping_up.discard(key)
                if not waiting.cancelled():
                    # Its failure, should nobody take it over, is not an unretrieved error.
                    waiting.add_done_callback(_retrieve_exception)
                    self._pending_pops[key] = waiting
                raise
            if left:
                self._keeping_up.discard(key)
            else:
                self._keeping_up.add(key)
            taken = self._to_sinks(taken)
            if taken:
                break
        # The caller (channels-redis's receive) buffers the first message as soon as it gets
        # it; the rest follow it, in order, at the event loop's next turn. Nothing is awaited
        # in between: they all reach their buffers, or (cancelled before this point) a batch
        # is still in the backup and the next call puts it back, and a pop's message is
        # taken by the next call (_pending_pops).
        first, *rest = taken
        if rest:
            asyncio.get_running_loop().call_soon(self._buffer, rest)
        return first

    async def _wait_for_arrival(self, connection, key: str) -> tuple[list, int]:
        """The first message to arrive, as a batch ([member, score]; [] at the timeout), and
        how many were left waiting behind it (counted as it was taken, in the same round
        trip: Redis runs the count when the pop returns)."""
        async with connection.pipeline(transaction=False) as pipe:
            pipe.bzpopmin(key, timeout=self.brpop_timeout)
            pipe.zcard(key)
            woke, left = await pipe.execute()
        if woke is None:
            return [], left
        _, member, score = woke
        return [member, score], left

    def _take_pending_pop(self, key: str) -> asyncio.Future | None:
        """The pop a cancelled receiver of this process left waiting on `key`, if it is still
        waiting or took something (a failed pop, Redis gone, took nothing: a new one starts)."""
        waiting = self._pending_pops.pop(key, None)
        if waiting is None or waiting.cancelled():
            return None
        if waiting.done() and waiting.exception() is not None:
            return None
        return waiting

    def _to_sinks(self, taken: list) -> list:
        """Unpack a batch ([member, score, ...]); deliver what has a sink, return the rest."""
        others = []
        sinks = self._sinks
        for member in taken[0::2]:
            for target, message in self._unpack_all(member):
                sink = sinks.get(target) if isinstance(target, str) else None
                if sink is not None:
                    sink(message)
                else:
                    others.append((target, message))
        return others

    def _unpack_all(self, member) -> list[tuple[str | list, dict]]:
        """The (channel, message) pairs one stored member carries: one, or a bundle's."""
        message = self.deserialize(member)
        bundle = message.pop(_BUNDLE, None)
        if bundle is not None:
            return [(channel, inner) for channel, inner in bundle]
        return [(message.pop("__asgi_channel__"), message)]

    def _buffer(self, messages: list) -> None:
        for target, message in messages:
            for name in target if isinstance(target, list) else [target]:
                self.receive_buffer[name].put_nowait(message)

    async def _take_batch(self, connection, key) -> list:
        delivered = key not in self._batch_in_flight
        self._batch_in_flight.add(key)
        args = (2, key, self._backup_channel_name(key), RECEIVE_BATCH, "1" if delivered else "0")
        try:
            taken = await connection.evalsha(_RECEIVE_SHA, *args)
        except NoScriptError:
            taken = await connection.eval(_RECEIVE_SCRIPT, *args)
        self._batch_in_flight.discard(key)
        return taken

    def create_pool(self, index):
        host = dict(self.hosts[index])
        if "address" not in host:
            # Sentinel and host/port entries: channels-redis's own pools.
            return super().create_pool(index)
        address = host.pop("address")
        timeout = host.pop("pool_timeout", redis_client.POOL_TIMEOUT)
        return redis_client.async_pool(address, pool_timeout=timeout, **host)

    async def send(self, channel, message, *, capacity: int | None = None):
        """Send a message onto a (general or specific) channel, in one round trip.

        `capacity`: refuse (ChannelFull) when this many messages already wait, instead of the
        channel's configured capacity; counting and adding are one atomic step, so concurrent
        senders cannot overshoot it (admission control for the inference queue)."""
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        assert "__asgi_channel__" not in message
        channel_non_local_name = channel
        if "!" in channel:
            # Process-local channels share their process's key; the full name travels inside.
            message = dict(message.items())
            message["__asgi_channel__"] = channel
            channel_non_local_name = self.non_local_name(channel)
            index = self.consistent_hash(channel)
        else:
            index = next(self._send_index_generator)
        channel_key = self.prefix + channel_non_local_name
        now = time.time()
        args = (
            self.serialize(message),
            now,
            int(now) - int(self.expiry),
            self.get_capacity(channel) if capacity is None else capacity,
            int(self.expiry),
        )
        if not await self._run_script(
            self.connection(index), _SEND_SHA, _SEND_SCRIPT, [channel_key], args
        ):
            raise ChannelFull()

    async def send_bundle(self, pairs: list[tuple[str, dict]]) -> None:
        """Send several messages to process-local channels of ONE process as one Redis message
        (one round trip, one entry to read): the receiving process hands each to its channel
        in order, as if sent one by one. A worker streaming many answers to the same web
        process bundles what is due at the same moment (see inference_worker.mailbox).
        Raises ChannelFull like send()."""
        channel = pairs[0][0]
        assert all(
            "!" in name and self.non_local_name(name) == self.non_local_name(channel)
            for name, _ in pairs
        ), "a bundle goes to the channels of one process"
        if len(pairs) == 1:
            await self.send(channel, pairs[0][1])
            return
        index = self.consistent_hash(channel)
        channel_key = self.prefix + self.non_local_name(channel)
        now = time.time()
        args = (
            self.serialize({_BUNDLE: [[name, message] for name, message in pairs]}),
            now,
            int(now) - int(self.expiry),
            self.get_capacity(channel),
            int(self.expiry),
        )
        if not await self._run_script(
            self.connection(index), _SEND_SHA, _SEND_SCRIPT, [channel_key], args
        ):
            raise ChannelFull()

    async def group_send(self, group, message, *, exclude: Collection[str] = ()):
        """channels-redis's group_send in two round trips instead of four, one when nobody
        (but `exclude`) is in the group: its members read in one pipeline with the pruning
        of expired ones, and sent to in one script per Redis host with the pruning of expired
        messages. Every answer announces itself to two groups, mostly empty or holding only
        the socket that asked: under a burst of new conversations the round trips added up.
        `exclude`: members that already know (they are not sent the message)."""
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        async with connection.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
            pipe.zrange(key, 0, -1)
            _, members = await pipe.execute()
        channels = [name for name in (member.decode() for member in members) if name not in exclude]
        if not channels:
            return
        by_connection, messages, capacities = self._map_channel_keys_to_connection(
            channels, message
        )
        now = time.time()
        for index, keys in by_connection.items():
            args = [
                *(messages[key] for key in keys),
                *(capacities[key] for key in keys),
                now,
                int(now) - int(self.expiry),
                int(self.expiry),
            ]
            full = await self._run_script(
                self.connection(index), _GROUP_SEND_SHA, _GROUP_SEND_SCRIPT, keys, args
            )
            if full:
                log.info("%s of %s channels over capacity in group %s", full, len(channels), group)

    @staticmethod
    async def _run_script(connection, sha: str, script: str, keys: list, args: list) -> int:
        # EVALSHA sends the script's hash only; a Redis that has not seen the script yet (a
        # new or restarted server) answers NOSCRIPT once, and EVAL runs and caches it.
        try:
            return await connection.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            return await connection.eval(script, len(keys), *keys, *args)

    async def group_add(self, group, channel):
        """channels-redis's group_add (add, then renew the group's expiry) in one round trip:
        workers renew their membership at every heartbeat."""
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        group_key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        async with connection.pipeline(transaction=False) as pipe:
            pipe.zadd(group_key, {channel: time.time()})
            pipe.expire(group_key, self.group_expiry)
            await pipe.execute()

    async def _clean_receive_backup(self, index, channel):
        # channels-redis runs this as a detached task after each receive; when Redis drops
        # right then, its exception surfaced only as asyncio's "Task exception was never
        # retrieved" with a traceback. The message was received all the same.
        try:
            await super()._clean_receive_backup(index, channel)
        except (RedisError, OSError) as exc:
            log.warning(
                "could not clear a received message from %s's backup (%s); Redis may "
                "deliver it again",
                channel,
                exc.__class__.__name__,
            )
