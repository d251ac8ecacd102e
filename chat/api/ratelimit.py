"""The API's limits, kept in Redis so they hold across Daphne processes.

- requests a minute per key (`ApiKey.requests_per_minute`, 0 for none): `check_request`;
- tokens a day per key, per UTC day (`ApiKey.tokens_per_day`, 0 for none): `check_tokens`
  before an answer, `count_tokens` after it;
- failed authentications per client IP (settings.API["FAILED_AUTH_LIMIT"]), so keys cannot
  be guessed at speed: `failed_auth_exhausted` before looking at a key, `count_failed_auth`
  after a wrong one.

Rate limits run on the customer chat's limiter (`chat.limits`): the same Redis connection per
event loop, the same moving window (exact: with "60/minute" the 61st request within any 60 s
is refused, and a refused request is not counted), IPv6 clients counted per /64, and the same
stance when Redis is away: everything is let through, counted in cs_chat_limits_unavailable_total
and logged once a minute, and Redis is left alone for a few seconds instead of each request
waiting out a timeout.

A refusal is an ApiError 429 with Retry-After and X-RateLimit-Limit/-Remaining/-Reset (reset:
whole seconds until the limit accepts again). A request that passes gets the per-minute
figures in `request.rate_limit`, which `RateLimitHeadersMiddleware` puts on its response.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from limits import RateLimitItem, RateLimitItemPerMinute

from chat import limits as chat_limits
from chat.api.errors import QUOTA_EXCEEDED, RATE_LIMITED, ApiError
from chat.limits import LIMITED, ChatLimits, parse_figure
from chat.models import ApiKey
from runtime.client_ip import client_ip

T = TypeVar("T")

# Limiter namespaces, apart from the customer chat's ("conversation", "message", "frame").
REQUESTS = "api_requests"
FAILED_AUTH = "api_failed_auth"
# A day's token count lives a day longer than its day, so a clock skew between web hosts at
# midnight cannot resurrect a counter; it then expires on its own.
TOKENS_TTL_SECONDS = 2 * 24 * 3600


@dataclass(frozen=True)
class RateLimit:
    """Where a key stands in its per-minute window, for the X-RateLimit-* headers."""

    limit: int
    remaining: int
    reset: int  # whole seconds until the window accepts one more request than now

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }


# --- requests a minute per key --------------------------------------------------------------


async def check_request(key: ApiKey) -> RateLimit | None:
    """Count one request against the key's requests a minute; raises ApiError 429
    (rate_limited) when the key has used them all. Returns the window's figures, or None when
    the key has no limit or Redis cannot be reached."""
    if not key.requests_per_minute:
        return None
    item = _per_minute(key.requests_per_minute)
    who = ("key", str(key.pk))

    async def hit(limits: ChatLimits):
        allowed = await limits._limiter.hit(item, REQUESTS, *who)
        return allowed, await limits._limiter.get_window_stats(item, REQUESTS, *who)

    outcome = await _with_redis(hit, None)
    if outcome is None:
        return None
    allowed, stats = outcome
    state = RateLimit(
        limit=item.amount, remaining=max(0, stats.remaining), reset=_seconds_until(stats.reset_time)
    )
    if not allowed:
        LIMITED.labels("api_key_requests").inc()
        raise _too_many(
            RATE_LIMITED,
            f"This API key allows {item.amount} requests a minute; "
            f"try again in {chat_limits._duration(state.reset)}.",
            state,
        )
    return state


@lru_cache(maxsize=64)
def _per_minute(amount: int) -> RateLimitItem:
    return RateLimitItemPerMinute(amount)


# --- tokens a day per key -------------------------------------------------------------------
# A plain counter per key and UTC day rather than a `limits` window: a moving window stores one
# entry per token counted (hundreds of thousands a day), and `limits`' fixed window starts at
# the first hit, where a quota "a day" is expected to start at midnight UTC for everyone.


async def check_tokens(key: ApiKey) -> None:
    """Before an answer: raises ApiError 429 (quota_exceeded) when the key has used its tokens
    for today (UTC). Its X-RateLimit-* headers then describe the daily token quota."""
    if not key.tokens_per_day:
        return
    used = await tokens_used_today(key)
    if used is None or used < key.tokens_per_day:
        return
    LIMITED.labels("api_key_tokens").inc()
    wait = _seconds_until_utc_midnight()
    raise _too_many(
        QUOTA_EXCEEDED,
        f"This API key has used its {key.tokens_per_day} tokens for today (UTC); "
        f"try again in {chat_limits._duration(wait)}, after midnight UTC.",
        RateLimit(limit=key.tokens_per_day, remaining=0, reset=wait),
    )


async def count_tokens(key: ApiKey, n: int) -> int | None:
    """After an answer: add its prompt and completion tokens to the key's count for today.
    Returns today's total, or None when nothing was counted (n <= 0, or Redis away)."""
    if n <= 0:
        return None
    name = _tokens_key(key.pk)

    async def add(limits: ChatLimits) -> int:
        async with limits._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(name, n)
            pipe.expire(name, TOKENS_TTL_SECONDS)
            total, _ = await pipe.execute()
        return int(total)

    return await _with_redis(add, None)


async def tokens_used_today(key: ApiKey) -> int | None:
    """Tokens counted for the key today (UTC); None when Redis cannot be reached."""

    async def read(limits: ChatLimits) -> int:
        return int(await limits._redis.get(_tokens_key(key.pk)) or 0)

    return await _with_redis(read, None)


def _tokens_key(key_id: int) -> str:
    return f"{chat_limits.KEY_PREFIX}:api_tokens:{key_id}:{datetime.now(UTC):%Y-%m-%d}"


def _seconds_until_utc_midnight() -> int:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1, math.ceil((midnight - now).total_seconds()))


# --- failed authentications per client IP ---------------------------------------------------


async def failed_auth_exhausted(ip: str) -> ApiError | None:
    """The 429 to answer when this address has used up its failed authentications (checked
    before the key is looked at, so a guesser learns nothing more); None otherwise, and for
    an unknown address (see chat.limits._per_ip)."""
    bucket = chat_limits._ip_bucket(ip)
    if bucket is None:
        return None
    items = parse_figure(settings.API["FAILED_AUTH_LIMIT"])

    async def exhausted(limits: ChatLimits) -> RateLimit | None:
        # Reading the window costs one round trip and counts nothing, so a client with a
        # good key is never slowed down by the check.
        for item in items:
            stats = await limits._limiter.get_window_stats(item, FAILED_AUTH, "ip", bucket)
            if stats.remaining <= 0:
                return RateLimit(
                    limit=item.amount, remaining=0, reset=_seconds_until(stats.reset_time)
                )
        return None

    state = await _with_redis(exhausted, None)
    if state is None:
        return None
    LIMITED.labels("api_failed_auth").inc()
    return _too_many(
        RATE_LIMITED,
        "Too many requests with a missing or wrong API key from your network; "
        f"try again in {chat_limits._duration(state.reset)}.",
        state,
    )


async def count_failed_auth(ip: str) -> None:
    """Count one failed authentication against this address."""
    bucket = chat_limits._ip_bucket(ip)
    if bucket is None:
        return
    items = parse_figure(settings.API["FAILED_AUTH_LIMIT"])

    async def count(limits: ChatLimits) -> None:
        for item in items:
            await limits._limiter.hit(item, FAILED_AUTH, "ip", bucket)

    await _with_redis(count, None)


def request_client_ip(request: HttpRequest) -> str:
    """The client's address (honouring TRUSTED_PROXIES), or "" when none can be told."""
    scope = getattr(request, "scope", None)  # ASGIRequest
    if scope is not None:
        return client_ip(scope)
    return client_ip(request.headers, peer=request.META.get("REMOTE_ADDR"))


# --- the headers on every response of an authenticated request ------------------------------


class RateLimitHeadersMiddleware:
    """Puts `request.rate_limit` (set by chat.api.auth.ApiKeyAuth) on the response as
    X-RateLimit-Limit/-Remaining/-Reset, so a client can pace itself before it is refused.
    Headers a response already has (a 429's own) are left as they are."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.async_mode:
            return self.__acall__(request)
        return _add_headers(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        return _add_headers(request, await self.get_response(request))


def _add_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    state = getattr(request, "rate_limit", None)
    if isinstance(state, RateLimit):
        for name, value in state.headers().items():
            if name not in response:
                response[name] = value
    return response


# --- helpers --------------------------------------------------------------------------------


async def _with_redis(work: Callable[[ChatLimits], Awaitable[T]], default: T) -> T:
    """`work` on this event loop's limiter, or `default` when Redis cannot be reached: the
    API fails open exactly like the customer chat (see chat.limits.ChatLimits._unavailable)."""
    limits = chat_limits._limits()
    if limits._skipping():
        return default
    try:
        return await work(limits)
    except chat_limits._REDIS_ERRORS as exc:
        limits._unavailable(exc)
        return default


def _seconds_until(timestamp: float) -> int:
    return max(1, math.ceil(timestamp - time.time()))


def _too_many(code: str, message: str, state: RateLimit) -> ApiError:
    return ApiError(
        429, code, message, headers={"Retry-After": str(state.reset), **state.headers()}
    )
