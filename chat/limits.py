"""Limits on customer sockets, kept in Redis so they hold across Daphne processes and reconnects.

What is limited, each figure from settings.CHAT:
- new conversations per client IP (IP_CONVERSATION_LIMIT) and per site (SITE_CONVERSATION_LIMIT);
- customer messages per client IP (IP_MESSAGE_LIMIT);
- frames per conversation (SOCKET_RATE_LIMIT), or per socket before it has a conversation;
- bot answers streaming at once per site (SITE_CONCURRENT_ANSWERS): answer slots.

Rate limits use the `limits` library's moving window, which counts exactly: with "5/minute" the
sixth hit within any 60 s is refused, and a refused hit is not counted, so waiting the time a
refusal names is enough. IPv6 clients are counted per /64, the block one subscriber gets.

When Redis cannot be reached every check lets the customer through (see `_unavailable`).
When it can, but every connection of the process stays busy for a while, a check refuses the
action as busy instead (see `_pool_exhausted`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import weakref
from dataclasses import dataclass, replace
from functools import lru_cache
from ipaddress import IPv6Network
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError

from chat import frames
from runtime.client_ip import parse_ip
from runtime.redis_client import async_client

log = logging.getLogger(__name__)

KEY_PREFIX = "chat:limits"
# A limit check sits in front of every new conversation and message: a Redis that hangs must
# cost the customer at most about this long, once, before the checks stand aside.
REDIS_TIMEOUT_SECONDS = 1.0
# After a failure, checks skip Redis for this long instead of each waiting out a timeout.
SKIP_REDIS_AFTER_FAILURE_SECONDS = 5.0
# When every connection of the process's pool (settings.REDIS_MAX_CONNECTIONS) is in use, a
# check waits this long for one. Longer than REDIS_TIMEOUT_SECONDS: when Redis hangs, the
# checks holding connections time out (and set the limits aside) before those waiting give up.
POOL_WAIT_SECONDS = 2 * REDIS_TIMEOUT_SECONDS
# What an action refused for want of a connection asks the customer to wait.
BUSY_RETRY_AFTER_SECONDS = 2
# One warning per this many seconds per process while Redis is away, not one per customer.
WARN_EVERY_SECONDS = 60.0
NO_SITE = "-"  # the desk's own pages, which have no site key

LIMITED = Counter("cs_chat_limited_total", "Customer actions refused by a limit", ["limit"])
UNAVAILABLE = Counter(
    "cs_chat_limits_unavailable_total",
    "Limit checks let through because Redis could not be reached",
)
BUSY = Counter(
    "cs_chat_limits_busy_total",
    "Limit checks that found no Redis connection of their process free in time",
)

_REDIS_ERRORS = (RedisError, OSError, StorageError)


@dataclass(frozen=True)
class Refusal:
    """Why an action was refused, for the customer's error frame."""

    message: str  # says what to do: "... try again in 40 seconds."
    retry_after: int  # seconds until the action would be accepted again
    code: str = frames.ErrorCode.RATE_LIMITED


# When no Redis connection of the process came free in time (see ChatLimits._pool_exhausted).
BUSY_REFUSAL = Refusal(
    message=f"This chat is very busy right now; try again in {BUSY_RETRY_AFTER_SECONDS} seconds.",
    retry_after=BUSY_RETRY_AFTER_SECONDS,
)


@dataclass(frozen=True)
class Slot:
    """A place among a site's answers streaming at once; release it when the answer ends."""

    site_key: str
    id: str
    # False when granted without Redis (it was unreachable, or the limit is off): nothing to
    # refresh or release, and nothing counted it.
    held: bool = True


# Slot ids live in one sorted set per site, scored by when they expire on Redis's own clock
# (web hosts' clocks may differ). Expired ids are pruned before counting, so a process that
# died holding slots gives them back after one answer timeout at the latest.
_ACQUIRE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl * 1000 then
    redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
end
return 1
"""

_REFRESH_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl * 1000 then
    redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
end
return 1
"""


def storage_uri(redis_url: str) -> str:
    """The `limits` storage URI for REDIS_URL, served by redis-py's asyncio client.

    `limits` reads "async+redis+unix:///path" as redis-py's "unix:///path", and needs a port
    on every host, where redis-py assumes 6379.
    """
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"async+redis+{redis_url}"
    if parts.scheme in ("redis", "rediss"):
        if parts.hostname and parts.port is None:
            parts = parts._replace(netloc=f"{parts.netloc}:6379")
        return f"async+{urlunsplit(parts)}"
    raise ImproperlyConfigured(
        f"REDIS_URL={redis_url!r}: expected redis://host:port/db, rediss://… or unix:///path."
    )


class ChatLimits:
    """The limits against one Redis, for one event loop (redis-py connections belong to the
    loop that opened them). The module functions below use one per loop."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._redis = async_client(
            redis_url,
            decode_responses=False,  # as `limits` reads its replies
            pool_timeout=POOL_WAIT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            # One quick retry after a dropped connection survives a Redis restart (a stale
            # pooled connection). None after a timeout, and not redis-py's default of ten with
            # backoff: either would hold the customer for several timeouts.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._storage = RedisStorage(
            storage_uri(redis_url),  # checked here; the connections are the pool's
            implementation="redispy",  # `limits` defaults to coredis, which is not installed
            connection_pool=self._redis.connection_pool,
            key_prefix=KEY_PREFIX,
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._acquire_slot = self._redis.register_script(_ACQUIRE_SLOT)
        self._refresh_slot = self._redis.register_script(_REFRESH_SLOT)
        self._skip_until = 0.0

    async def aclose(self) -> None:
        await self._redis.aclose()

    # --- rate limits -----------------------------------------------------------------------

    async def check_new_conversation(self, *, ip: str, site_key: str) -> Refusal | None:
        cfg = settings.CHAT
        return await self._check(
            *_per_ip(
                "ip_conversation",
                cfg["IP_CONVERSATION_LIMIT"],
                ip,
                "Too many new conversations from your network; try again in {wait}.",
            ),
            (
                "site_conversation",
                cfg["SITE_CONVERSATION_LIMIT"],
                ("site", site_key or NO_SITE),
                "This chat is very busy right now; try again in {wait}.",
            ),
            namespace="conversation",
        )

    async def check_message(self, *, ip: str) -> Refusal | None:
        return await self._check(
            *_per_ip(
                "ip_message",
                settings.CHAT["IP_MESSAGE_LIMIT"],
                ip,
                "Too many messages from your network; try again in {wait}.",
            ),
            namespace="message",
        )

    async def check_frame(
        self, *, socket_id: str, conversation_id: str | None = None
    ) -> Refusal | None:
        # Per conversation, not per socket: a reconnect or a second tab shares the budget.
        who = ("conversation", str(conversation_id)) if conversation_id else ("socket", socket_id)
        return await self._check(
            (
                "frame",
                settings.CHAT["SOCKET_RATE_LIMIT"],
                who,
                "You are sending messages too fast; wait {wait} before sending again.",
            ),
            namespace="frame",
        )

    async def _check(
        self, *checks: tuple[str, str, tuple[str, ...], str], namespace: str
    ) -> Refusal | None:
        """Hit each limit in order; the first one exceeded refuses, and later ones are then
        not counted (a refused conversation does not use up its site's budget)."""
        if self._skipping():
            return None
        try:
            for name, figure, who, message in checks:
                for item in parse_figure(figure):
                    if await self._limiter.hit(item, namespace, *who):
                        continue
                    stats = await self._limiter.get_window_stats(item, namespace, *who)
                    wait = max(1, math.ceil(stats.reset_time - time.time()))
                    LIMITED.labels(name).inc()
                    return Refusal(message=message.format(wait=_duration(wait)), retry_after=wait)
        except MaxConnectionsError as exc:
            if self._pool_exhausted(exc):
                return BUSY_REFUSAL
        except _REDIS_ERRORS as exc:
            self._unavailable(exc)
        return None

    # --- answer slots ----------------------------------------------------------------------

    async def acquire_answer_slot(self, *, site_key: str, ttl: float | None = None) -> Slot | None:
        """A slot for one more answer of this site, or None when SITE_CONCURRENT_ANSWERS are
        streaming. It lapses after `ttl` (default: ANSWER_TIMEOUT_SECONDS) unless refreshed."""
        slot = Slot(site_key=site_key or NO_SITE, id=uuid.uuid4().hex)
        limit = settings.CHAT["SITE_CONCURRENT_ANSWERS"]
        if limit <= 0 or self._skipping():
            return replace(slot, held=False)
        try:
            granted = await self._acquire_slot(
                keys=[_slots_key(slot.site_key)], args=[limit, _slot_ttl(ttl), slot.id]
            )
        except MaxConnectionsError as exc:
            if self._pool_exhausted(exc):
                return None  # the site is treated as busy: the fallback answers
            return replace(slot, held=False)
        except _REDIS_ERRORS as exc:
            self._unavailable(exc)
            return replace(slot, held=False)
        if not granted:
            LIMITED.labels("site_answers").inc()
            return None
        return slot

    async def refresh_answer_slot(self, slot: Slot, *, ttl: float | None = None) -> bool:
        """Push the slot's expiry `ttl` from now; False when it had already lapsed (and may
        have gone to another answer)."""
        if not slot.held or self._skipping():
            return True
        try:
            return bool(
                await self._refresh_slot(
                    keys=[_slots_key(slot.site_key)], args=[_slot_ttl(ttl), slot.id]
                )
            )
        except MaxConnectionsError as exc:
            self._pool_exhausted(exc)
            return True  # the slot is still counted in Redis until it lapses
        except _REDIS_ERRORS as exc:
            self._unavailable(exc)
            return True

    async def release_answer_slot(self, slot: Slot) -> None:
        if not slot.held:
            return
        try:
            await self._redis.zrem(_slots_key(slot.site_key), slot.id)
        except MaxConnectionsError as exc:
            self._pool_exhausted(exc)  # the slot lapses on its own
        except _REDIS_ERRORS as exc:
            self._unavailable(exc)  # the slot lapses on its own

    # --- Redis unreachable -----------------------------------------------------------------

    def _skipping(self) -> bool:
        return time.monotonic() < self._skip_until

    def _unavailable(self, exc: BaseException) -> None:
        """Fail open. Redis holds caches and transport, never the truth; a limit that cannot
        be counted is not a reason to turn a customer away, and refusing everybody would make
        a Redis outage a full outage. The limits come back with Redis; meanwhile each worker
        still runs a bounded number of requests.

        A busy pool is no outage: it sets nothing aside (callers that let the one request
        through, as the API's do, still count every other)."""
        if isinstance(exc, MaxConnectionsError):
            self._pool_exhausted(exc)
            return
        self._skip_until = time.monotonic() + SKIP_REDIS_AFTER_FAILURE_SECONDS
        UNAVAILABLE.inc()
        _warn_unavailable(self.redis_url, exc)

    def _pool_exhausted(self, exc: BaseException) -> bool:
        """No connection of this process came free within POOL_WAIT_SECONDS; True when the
        action should be refused as busy.

        Waiting for a connection is normal under load, and Redis answered every command that
        got one: this is not the outage `_unavailable` stands aside for. Letting the action
        through uncounted would turn the limits off exactly when one process is flooded (a
        burst of sockets, or an attacker's), so it is refused with a short wait instead, and
        nothing is set aside: every other check keeps counting. False (fail open, like the
        other checks) when Redis was found unreachable meanwhile: then the wait was the
        outage's doing."""
        if self._skipping():
            return False
        BUSY.inc()
        _warn_once_a_while(
            "pool",
            "Limit checks found every Redis connection of this process busy for %s s "
            "(%s); their actions are refused as busy. Raise REDIS_MAX_CONNECTIONS or add web "
            "processes.",
            POOL_WAIT_SECONDS,
            exc,
        )
        return True


_last_warning: dict[str, float] = {}


def _warn_once_a_while(topic: str, message: str, *args: object) -> None:
    now = time.monotonic()
    if now - _last_warning.get(topic, -math.inf) < WARN_EVERY_SECONDS:
        return
    _last_warning[topic] = now
    log.warning(message, *args)


def _warn_unavailable(redis_url: str, exc: BaseException) -> None:
    _warn_once_a_while(
        "redis",
        "Rate limits (chat and API) are not enforced: Redis at %s is unreachable "
        "(%s: %s). Requests are served without per-IP, per-site and per-key limits until it "
        "is back.",
        redis_url,
        type(exc).__name__,
        exc,
    )


def _per_ip(name: str, figure: str, ip: str, message: str) -> list:
    """The per-IP check, or none when the address is unknown. Counting every unknown client
    as one would turn away all customers at once; the cause is a front proxy on a unix socket
    without TRUSTED_PROXIES=unix (or a test scope without a client), and is logged."""
    bucket = _ip_bucket(ip)
    if bucket is None:
        _warn_once_a_while(
            "ip",
            "Per-IP chat limits are skipped for a client without an address; behind a "
            "proxy on a unix socket, set TRUSTED_PROXIES=unix.",
        )
        return []
    return [(name, figure, ("ip", bucket), message)]


@lru_cache(maxsize=32)
def parse_figure(figure: str) -> tuple[RateLimitItem, ...]:
    """ "20/minute", or several separated by ";" ("20/minute;200/day"); empty: no limit."""
    if not figure.strip():
        return ()
    try:
        return tuple(parse_many(figure))
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"Limit {figure!r} is not a rate limit such as '20/minute' or "
            "'20/minute;200/day' (see the CHAT_*_LIMIT and API_*_LIMIT settings)."
        ) from exc


def _ip_bucket(ip: str) -> str | None:
    address = parse_ip(ip)
    if address is None:
        return None
    if address.version == 6:
        return str(IPv6Network((address, 64), strict=False))
    return str(address)


def _slots_key(site_key: str) -> str:
    return f"{KEY_PREFIX}:answers:{site_key}"


def _slot_ttl(ttl: float | None) -> float:
    return ttl if ttl is not None else settings.CHAT["ANSWER_TIMEOUT_SECONDS"]


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"


# --- what the consumers call: one ChatLimits per event loop, on settings.REDIS_URL -----------

_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ChatLimits] = (
    weakref.WeakKeyDictionary()
)


def _limits() -> ChatLimits:
    loop = asyncio.get_running_loop()
    current = _per_loop.get(loop)
    if current is None or current.redis_url != settings.REDIS_URL:
        current = _per_loop[loop] = ChatLimits(settings.REDIS_URL)
    return current


async def check_new_conversation(*, ip: str, site_key: str) -> Refusal | None:
    """Before a conversation is created: counts it against its IP, then its site."""
    return await _limits().check_new_conversation(ip=ip, site_key=site_key)


async def check_message(*, ip: str) -> Refusal | None:
    """Before a customer message is stored: counts it against its IP, over all conversations."""
    return await _limits().check_message(ip=ip)


async def check_frame(*, socket_id: str, conversation_id: str | None = None) -> Refusal | None:
    """For each frame a socket receives: the flood limit, kept per conversation when there is
    one (so reconnecting does not reset it), else per socket (e.g. the channel name)."""
    return await _limits().check_frame(socket_id=socket_id, conversation_id=conversation_id)


async def acquire_answer_slot(*, site_key: str, ttl: float | None = None) -> Slot | None:
    return await _limits().acquire_answer_slot(site_key=site_key, ttl=ttl)


async def refresh_answer_slot(slot: Slot, *, ttl: float | None = None) -> bool:
    return await _limits().refresh_answer_slot(slot, ttl=ttl)


async def release_answer_slot(slot: Slot) -> None:
    await _limits().release_answer_slot(slot)


async def close() -> None:
    """Close this event loop's Redis connections (tests, management commands)."""
    current = _per_loop.pop(asyncio.get_running_loop(), None)
    if current is not None:
        await current.aclose()
