"""Presence kept in one Redis sorted set: each member is scored by the Unix time of its last beat.

Used for the inference workers (inference_worker.presence) and for the agents with a console
open (agents.presence). A member counts as live for `ttl` seconds after its last beat; one
silent for `forget_after` TTLs (it died without leaving) is removed at the next beat of any
member, so the set never grows with the dead.

Every method queues its commands on a Redis pipeline instead of running them, so a caller
puts a beat in the same round trip (and transaction) as its own commands, and the same code
serves redis-py's synchronous and asyncio clients: queueing on a pipeline is synchronous in
both. No Django and no Redis import here: the worker's presence reads it with no configured
web project (see tests/operations/test_import_direction.py).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Heartbeats:
    key: str  # the sorted set: member → Unix time of its last beat
    ttl: float  # seconds after its last beat a member still counts as live
    forget_after: float = 10  # in TTLs: a member silent this long is removed at the next beat

    def beat(self, pipe, member: str, now: float) -> None:
        """Queue the beat and the pruning. Their three results: 1 if the member was not in the
        set (0 if it was), the members removed as dead (to clean up what the caller keeps
        beside them) and how many they were."""
        forget_before = now - self.forget_after * self.ttl
        pipe.zadd(self.key, {member: now})
        pipe.zrangebyscore(self.key, "-inf", forget_before)
        pipe.zremrangebyscore(self.key, "-inf", forget_before)

    def leave(self, pipe, member: str) -> None:
        pipe.zrem(self.key, member)

    def live(self, pipe, now: float) -> None:
        """Queue the read of the members that beat within the last `ttl` seconds."""
        pipe.zrangebyscore(self.key, now - self.ttl, "+inf")

    def count_live(self, pipe, now: float) -> None:
        """Queue the count of the members that beat within the last `ttl` seconds."""
        pipe.zcount(self.key, now - self.ttl, "+inf")
