"""Which inference workers are alive, how many requests they can run, and how many wait.

Each worker beats a score into one Redis sorted set and records its number of slots (requests
it runs at once) in a hash beside it. A consumer asks before sending a request, so when no
worker is up, or the queue already holds as many requests as the live workers can soon start,
the customer gets the fallback answer at once instead of after the first-token deadline.

No Django here: the caller says how long a beat counts and where the channel layer keeps a
channel's messages (`WorkerPresence`'s fields); inference_worker.pool builds it from the
settings.
"""

import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from runtime.heartbeats import Heartbeats

KEY = "inference:workers"  # worker name → Unix time of its last heartbeat
SLOTS_KEY = "inference:slots"  # worker name → requests it runs at once
# worker name → seconds one of its slots has recently taken per answer (a moving average):
# how soon a slot frees, so how long a queued request waits.
TURNOVER_KEY = "inference:turnover"
# worker name → its slots free at its last beat (requests it would start at once)
FREE_KEY = "inference:free"
COLD_QUEUE_SHARE = 0.5  # of the queue per slot, before any answer has been timed


@dataclass(frozen=True)
class Capacity:
    live: int  # workers alive
    slots: int  # requests they run at once, in all
    queued: int  # requests waiting in the channel for a free slot
    turnover: float | None  # seconds a slot takes per answer lately (None: not known yet)
    free: int = 0  # slots free at the workers' last beats: what they take at once

    def counts(self) -> tuple[int, int, int]:
        return self.live, self.slots, self.queued

    def queue_limit(self, *, queue_per_slot: float, first_token_timeout: float) -> int:
        """How many requests may wait for a slot so that each still starts in time; 0 when no
        worker is alive. Behind `queued` others a request starts once that many more slots
        have freed: after about queued / slots turnovers, plus up to one for the answers
        running now, which must leave it inside `first_token_timeout`. At most
        `queue_per_slot` requests wait per slot in any case; one may always wait (the next
        slot to free up takes it, the best anyone can do).

        Requests for the slots free right now do not wait either: as many as are free may be
        in the channel at once (they are taken in a moment). Measured: without that, a burst
        of 16 questions at an idle worker with 16 slots found a few of its own requests still
        in the channel, not taken yet, and 18 of 80 got "busy". The larger of the two, not
        their sum: the free count is a moment old, and a burst that has just taken the free
        slots must not find the same room again behind them."""
        if self.live == 0:
            return 0
        if self.turnover:
            per_slot = min(queue_per_slot, first_token_timeout / self.turnover - 1)
        else:
            # No answer timed yet: a cold engine's first answers are its slowest (no prefix
            # cache yet, first allocations), and how long they take is unknown. Half the queue
            # until then: measured on 2 CPU cores, a full one let requests behind 4 grounded
            # answers wait out the 30 s first-token deadline.
            per_slot = queue_per_slot * COLD_QUEUE_SHARE
        return max(self.free, 1, math.floor(self.slots * per_slot))


@dataclass(frozen=True)
class Beat:
    """What a worker's beat found."""

    # The worker was not in the set: its first beat, or Redis restarted or counted it as gone
    # since. Whatever else Redis kept for it (its control-group membership) is to be renewed.
    arrived: bool
    queued: int | None = None  # requests waiting in the channel asked about, if one was


@dataclass(frozen=True)
class WorkerPresence:
    ttl: float  # seconds after its last beat a worker counts as gone
    # channels-redis keeps a channel's waiting messages in a sorted set named prefix+channel,
    # scored by the time each was sent, and drops those sent more than `expiry` seconds ago on
    # its next send: the channel layer's CONFIG "prefix" and "expiry".
    channel_prefix: str = "asgi"
    channel_expiry: float = 60

    @property
    def heartbeats(self) -> Heartbeats:
        return Heartbeats(KEY, self.ttl)

    async def beat(
        self,
        redis: Redis,
        worker: str,
        slots: int = 1,
        turnover: float | None = None,
        free: int | None = None,
        *,
        queue_of: str | None = None,
    ) -> Beat:
        """One round trip: the beat, the worker's slots, and with `queue_of` the count of the
        requests waiting in that channel."""
        now = time.time()
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(SLOTS_KEY, worker, slots)
            pipe.hset(FREE_KEY, worker, slots if free is None else max(0, free))
            if turnover is not None:
                pipe.hset(TURNOVER_KEY, worker, round(turnover, 3))
            self.heartbeats.beat(pipe, worker, now)
            if queue_of is not None:
                self._waiting(pipe, queue_of, now)
            results = await pipe.execute()
        queued = results.pop() if queue_of is not None else None
        added, gone, _ = results[-3:]
        if gone:
            # Workers that died without saying goodbye: their slots go with them.
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hdel(SLOTS_KEY, *gone)
                pipe.hdel(FREE_KEY, *gone)
                pipe.hdel(TURNOVER_KEY, *gone)
                await pipe.execute()
        return Beat(arrived=bool(added), queued=queued)

    async def set_free(self, redis: Redis, worker: str, free: int) -> None:
        """The worker's free slots now (between beats: it took or finished a request)."""
        await redis.hset(FREE_KEY, worker, max(0, free))

    async def leave(self, redis: Redis, worker: str) -> None:
        async with redis.pipeline(transaction=True) as pipe:
            self.heartbeats.leave(pipe, worker)
            pipe.hdel(SLOTS_KEY, worker)
            pipe.hdel(FREE_KEY, worker)
            pipe.hdel(TURNOVER_KEY, worker)
            await pipe.execute()

    async def live_workers(self, redis: Redis) -> int:
        async with redis.pipeline(transaction=False) as pipe:
            self.heartbeats.count_live(pipe, time.time())
            (live,) = await pipe.execute()
        return live

    def _waiting(self, pipe, channel: str, now: float) -> None:
        """Queue on `pipe` the count of messages waiting in `channel` that have not expired."""
        expired_up_to = int(now) - int(self.channel_expiry)
        pipe.zcount(self.channel_prefix + channel, f"({expired_up_to}", "+inf")

    async def capacity(self, redis: Redis, channel: str) -> Capacity:
        """The live workers' capacity and the queue in front of them, in one round trip."""
        now = time.time()
        async with redis.pipeline(transaction=False) as pipe:
            self.heartbeats.live(pipe, now)
            pipe.hgetall(SLOTS_KEY)
            pipe.hgetall(TURNOVER_KEY)
            pipe.hgetall(FREE_KEY)
            self._waiting(pipe, channel, now)
            live, slots, turnovers, free, queued = await pipe.execute()
        # A worker beating from an older release has no slots entry: count it as one slot.
        total_slots = sum(int(slots.get(name, 1)) for name in live)
        known = [
            (float(turnovers[name]), int(slots.get(name, 1))) for name in live if name in turnovers
        ]
        # Weighted by slots: the pool's average time per answer.
        turnover = (sum(t * n for t, n in known) / sum(n for _, n in known)) if known else None
        return Capacity(
            live=len(live),
            slots=total_slots,
            queued=queued,
            turnover=turnover,
            free=sum(int(free.get(name, 0)) for name in live),
        )
