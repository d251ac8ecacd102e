"""The claim: which run answers a conversation, valid across processes.

The process that wants to answer first sets the conversation's key in Redis (`SET NX` with a
short TTL, ANSWER_CLAIM_TTL_SECONDS, that it keeps renewing), so a second tab, a reload or
another Daphne process never starts a second answer to the same question. The value names the
run's channel and the bot message being streamed, for sockets that join the answer.
"""

import asyncio
import contextlib
import json
import logging

from django.conf import settings
from redis.exceptions import RedisError

from chat.answering import registry
from runtime.cancellation import raise_if_cancelled
from runtime.redis_client import get_redis

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError)


def key(conversation_id) -> str:
    return f"chat:answering:{conversation_id}"


def _ttl_ms() -> int:
    return int(settings.CHAT["ANSWER_CLAIM_TTL_SECONDS"] * 1000)


async def read(conversation_id) -> dict | None:
    """The claim of the conversation, if any run holds it; None too when Redis cannot say."""
    try:
        raw = await get_redis().get(key(conversation_id))
    except _REDIS_ERRORS:
        return None
    return json.loads(raw) if raw else None


async def owner_gone(conversation_id, channel: str, *, poll: float = 0.2) -> bool:
    """Whether the run on `channel`, which held the conversation's claim, is gone. Its process
    renews each claim it holds to the full TTL every PARTIAL_SAVE_SECONDS; one killed outright
    renews nothing, and its claims run out. So: False as soon as the claim's remaining time is
    seen to rise (renewed: the run lives) or another run holds it (that one answers); True once
    the claim has gone without either. Waits at most about one TTL."""
    deadline = asyncio.get_running_loop().time() + _ttl_ms() / 1000 + 2 * poll
    last_ms = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with get_redis().pipeline(transaction=False) as pipe:
                pipe.get(key(conversation_id))
                pipe.pttl(key(conversation_id))
                raw, left_ms = await pipe.execute()
        except _REDIS_ERRORS:
            raw, left_ms = "", None  # cannot tell now: look again
        raise_if_cancelled()
        if raw is None:
            return True
        if raw:
            if json.loads(raw).get("channel") != channel:
                return False
            if last_ms is not None and left_ms > last_ms:
                return False
            last_ms = left_ms
        await asyncio.sleep(poll)
    return False  # never seen to run out: a longer TTL than ours; its owner keeps it


def asked_key(conversation_id) -> str:
    return f"chat:asked:{conversation_id}"


# A question stored while another run holds the claim is left to that run, which looks for it
# when its answer ends. The attempt that fails marks the conversation "asked" in the same step,
# so the holder looks in the database only when someone did ask: most answers end with no
# newer question, and that query was a database hop per answer. The mark outlives any answer
# (a stale one costs one query, a lost one a question).
_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 0
"""
_ASKED_TTL_MS = 3600 * 1000


async def take(conversation_id: str, value: dict) -> bool:
    """Take the conversation for this process; False if another run holds it (which then
    finds the conversation marked asked when it lets go). Without Redis the answer proceeds
    (it will reach the fallback: the workers need Redis too)."""
    try:
        return bool(
            await get_redis().eval(
                _TAKE,
                2,
                key(conversation_id),
                asked_key(conversation_id),
                json.dumps(value),
                _ttl_ms(),
                _ASKED_TTL_MS,
            )
        )
    except _REDIS_ERRORS:
        log.warning("cannot claim %s in Redis; answering without a claim", conversation_id)
        return True


async def update(conversation_id: str, value: dict) -> None:
    """The claim's new value (it names the message being streamed now), if it still stands."""
    with contextlib.suppress(*_REDIS_ERRORS):
        await get_redis().set(key(conversation_id), json.dumps(value), xx=True, px=_ttl_ms())


# Only our own claim, compared and deleted in one step, with the asked mark of the time we
# held it. A claim that is no longer ours (it ran out) says nothing of who asked meanwhile: 1.
_RELEASE = """
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['channel'] == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return redis.call('DEL', KEYS[2])
end
return 1
"""


async def release(conversation_id: str, channel: str) -> bool:
    """Let go of the conversation. Returns whether a question may have been stored
    elsewhere while we held it (another run's take failed; or Redis cannot say): the
    caller then looks for it."""
    try:
        return bool(
            await get_redis().eval(
                _RELEASE, 2, key(conversation_id), asked_key(conversation_id), channel
            )
        )
    except _REDIS_ERRORS:
        return True


# Each run's claim, renewed for all the runs of this process in one script every
# PARTIAL_SAVE_SECONDS (one SET per run and tick cost 400 streams 200 round trips a second).
# A claim is renewed only while it is still this run's: between two questions a run lets go
# of it, and another process may have taken it.
_RENEW_OWN_CLAIMS = """
local renewed = 0
for i = 1, #KEYS do
    local v = redis.call('GET', KEYS[i])
    if v and cjson.decode(v)['channel'] == ARGV[i] then
        redis.call('PEXPIRE', KEYS[i], ARGV[#KEYS + 1])
        renewed = renewed + 1
    end
end
return renewed
"""
_renewer: asyncio.Task | None = None


def keep_alive() -> None:
    """Renew the claims of this process's runs until none is left (a run calls this as it
    starts; one renewer serves them all)."""
    global _renewer
    if _renewer is None or _renewer.done() or _renewer.get_loop() is not asyncio.get_running_loop():
        _renewer = registry.spawn(_renew_claims())


async def _renew_claims() -> None:
    script = get_redis().register_script(_RENEW_OWN_CLAIMS)
    while registry.runs:
        await asyncio.sleep(settings.CHAT["PARTIAL_SAVE_SECONDS"])
        if not await _renew_once(script):
            return
        raise_if_cancelled()


async def _renew_once(script) -> bool:
    """One tick's renewals; False when no run is left. The runs are held only for the tick:
    a list kept across the sleep would keep ended runs alive, and a renewer stopped in its
    sleep (the process stopping) would keep them for good in its CancelledError's traceback."""
    runs = list(registry.runs.values())
    if not runs:
        return False
    try:
        await script(
            keys=[key(run.cid) for run in runs], args=[*(run.channel for run in runs), _ttl_ms()]
        )
    except _REDIS_ERRORS as exc:  # the next tick tries again; claims last 3 ticks
        log.warning("could not renew %d answer claims (%s)", len(runs), exc.__class__.__name__)
    return True
