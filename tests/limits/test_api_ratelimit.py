"""The API's limits against a real Redis server: failed authentications per client IP,
requests a minute per key (with their headers), tokens a day per key, the headers middleware,
and a Redis that is away lets requests through. Requests go to the tiny API of
tests/api/test_api_keys.py, through the project's middleware."""

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient

from chat import limits
from chat.api import keys, ratelimit
from chat.api.ratelimit import RateLimit, RateLimitHeadersMiddleware
from runtime.redis_client import get_redis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.api.test_api_keys")]

MIDDLEWARE = "chat.api.ratelimit.RateLimitHeadersMiddleware"
HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

make_key = database_sync_to_async(keys.create_api_key)


@pytest.fixture(autouse=True)
async def close_limits():
    yield
    await limits.close()


@pytest.fixture(autouse=True)
def headers_middleware(settings):
    if MIDDLEWARE not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, MIDDLEWARE]


@pytest.fixture
def api_settings(settings):
    """api_settings(KEY=value, ...) overrides settings.API for one test."""

    def override(**values):
        settings.API = {**settings.API, **values}

    return override


async def whoami(secret: str | None = None, ip: str | None = None):
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
    if ip is not None:
        headers["X-Forwarded-For"] = ip  # read because the test client's peer is trusted
    return await AsyncClient().get("/t/whoami", headers=headers)


def rate_headers(response) -> tuple[int, int, int]:
    return tuple(int(response[name]) for name in HEADERS)


# --- failed authentications per IP ----------------------------------------------------------


async def test_failed_authentications_are_limited_per_ip(api_settings, settings):
    api_settings(FAILED_AUTH_LIMIT="3/minute")
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    _, secret = await make_key(name="x", scopes=["chat"])
    guesser = "198.51.100.9"

    assert (await whoami(secret, ip=guesser)).status_code == 200  # successes are not counted
    for attempt in (None, "csk_wrong", secret + "x"):
        assert (await whoami(attempt, ip=guesser)).status_code == 401
    refused = await whoami(secret, ip=guesser)  # even the right key, until the window frees

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert "missing or wrong API key" in error["message"]
    assert 58 <= int(refused["Retry-After"]) <= 60
    assert rate_headers(refused) == (3, 0, int(refused["Retry-After"]))
    # Other addresses are not affected.
    assert (await whoami(secret, ip="198.51.100.10")).status_code == 200
    assert (await whoami(secret, ip="2001:db8:0:1::1")).status_code == 200


async def test_ipv6_guessers_are_counted_per_64(api_settings, settings):
    api_settings(FAILED_AUTH_LIMIT="2/minute")
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    assert (await whoami("csk_a", ip="2001:db8:0:1::1")).status_code == 401
    assert (await whoami("csk_b", ip="2001:db8:0:1::ffff")).status_code == 401
    assert (await whoami("csk_c", ip="2001:db8:0:1:abcd::2")).status_code == 429
    assert (await whoami("csk_d", ip="2001:db8:0:2::1")).status_code == 401


# --- requests a minute per key --------------------------------------------------------------


async def test_requests_a_minute_per_key_with_headers():
    _, secret = await make_key(name="x", scopes=["chat"], requests_per_minute=3)
    _, other = await make_key(name="y", scopes=["chat"], requests_per_minute=3)

    seen = []
    for _ in range(3):
        response = await whoami(secret)
        assert response.status_code == 200
        seen.append(rate_headers(response))
    assert [(limit, remaining) for limit, remaining, _ in seen] == [(3, 2), (3, 1), (3, 0)]
    assert all(55 <= reset <= 60 for _, _, reset in seen)

    refused = await whoami(secret)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["message"].startswith("This API key allows 3 requests a minute; try again in ")
    retry_after = int(refused["Retry-After"])
    assert 55 <= retry_after <= 60
    assert rate_headers(refused) == (3, 0, retry_after)
    assert f"{retry_after} seconds" in error["message"]
    # Another key has its own minute.
    assert rate_headers(await whoami(other))[:2] == (3, 2)


async def test_the_window_moves_and_a_refused_request_is_not_counted():
    key, secret = await make_key(name="x", scopes=["chat"], requests_per_minute=2)
    item = ratelimit._per_minute(2)
    # Backdate the key's first hit to 59.5 s ago: it leaves the window within a second.
    async with asyncio.timeout(5):
        own = limits._limits()
        await own._limiter.hit(item, ratelimit.REQUESTS, "key", str(key.pk))
        window = f"{limits.KEY_PREFIX}:{item.key_for(ratelimit.REQUESTS, 'key', str(key.pk))}"
        await own._redis.lset(window, 0, time.time() - 59.5)

    assert (await whoami(secret)).status_code == 200
    refused = await whoami(secret)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == 1
    await asyncio.sleep(0.6)  # waiting out the window is the behaviour under test
    assert (await whoami(secret)).status_code == 200


async def test_requests_a_minute_hold_across_processes(settings):
    key, _ = await make_key(name="x", scopes=["chat"], requests_per_minute=5)

    def another_process():
        """Three requests from a new event loop on another thread: its own limiter and
        Redis connection, as in a second Daphne."""

        async def three():
            outcomes = []
            for _ in range(3):
                try:
                    outcomes.append(await ratelimit.check_request(key))
                except ratelimit.ApiError as exc:
                    outcomes.append(exc)
            await limits.close()
            return outcomes

        return asyncio.run(three())

    first, second = await asyncio.gather(
        asyncio.to_thread(another_process), asyncio.to_thread(another_process)
    )
    outcomes = first + second
    allowed = [o for o in outcomes if isinstance(o, RateLimit)]
    refused = [o for o in outcomes if not isinstance(o, RateLimit)]
    assert len(allowed) == 5 and len(refused) == 1
    # Remaining is read just after each hit, so two processes may both see the other's.
    assert all(0 <= o.remaining <= 4 and o.limit == 5 for o in allowed)
    assert min(o.remaining for o in allowed) == 0
    assert refused[0].status == 429 and refused[0].code == "rate_limited"


async def test_no_limit_means_no_headers():
    _, secret = await make_key(name="x", scopes=["chat"], requests_per_minute=0)
    for _ in range(5):
        response = await whoami(secret)
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response


# --- tokens a day per key -------------------------------------------------------------------


async def test_tokens_a_day_are_a_quota_per_key():
    key, secret = await make_key(name="x", scopes=["chat"], tokens_per_day=100)
    other, other_secret = await make_key(name="y", scopes=["chat"], tokens_per_day=100)

    assert await ratelimit.count_tokens(key, 60) == 60
    assert (await whoami(secret)).status_code == 200
    assert await ratelimit.count_tokens(key, 0) is None
    assert await ratelimit.count_tokens(key, 40) == 100
    assert await ratelimit.tokens_used_today(key) == 100

    refused = await whoami(secret)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert "used its 100 tokens for today (UTC)" in error["message"]
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    until_midnight = math.ceil((midnight - now).total_seconds())
    assert abs(int(refused["Retry-After"]) - until_midnight) <= 5
    assert rate_headers(refused) == (100, 0, int(refused["Retry-After"]))
    # Counted per key, per UTC day, forgotten two days later.
    assert (await whoami(other_secret)).status_code == 200
    ttl = await get_redis().ttl(ratelimit._tokens_key(key.pk))
    assert 2 * 86400 - 10 <= ttl <= 2 * 86400
    assert ratelimit._tokens_key(key.pk).endswith(f":{key.pk}:{now:%Y-%m-%d}")


async def test_no_token_limit_means_no_quota():
    key, secret = await make_key(name="x", scopes=["chat"], tokens_per_day=0)
    await ratelimit.count_tokens(key, 10_000_000)
    assert (await whoami(secret)).status_code == 200


# --- the headers middleware -----------------------------------------------------------------


async def test_a_success_carries_the_rate_limit_headers():
    _, secret = await make_key(name="x", scopes=["chat"], requests_per_minute=10)
    response = await whoami(secret)
    assert response.status_code == 200
    limit, remaining, reset = rate_headers(response)
    assert (limit, remaining) == (10, 9)
    assert 55 <= reset <= 60
    # A failed authentication has no key, so no figures.
    assert "X-RateLimit-Limit" not in await whoami("csk_wrong")


async def test_the_middleware_works_sync_and_async_and_keeps_a_responses_own_headers():
    state = RateLimit(limit=5, remaining=4, reset=60)

    def view(request):
        return HttpResponse(headers={"X-RateLimit-Remaining": "0"})

    async def async_view(request):
        return view(request)

    async def call(middleware, request):
        response = middleware(request)
        return await response if asyncio.iscoroutine(response) else response

    for middleware in (RateLimitHeadersMiddleware(view), RateLimitHeadersMiddleware(async_view)):
        request = HttpRequest()
        request.rate_limit = state
        assert rate_headers(await call(middleware, request)) == (5, 0, 60)
        # Without figures (no key, or no limit) the response is left alone.
        plain = await call(middleware, HttpRequest())
        assert "X-RateLimit-Limit" not in plain and plain["X-RateLimit-Remaining"] == "0"
    assert asyncio.iscoroutinefunction(RateLimitHeadersMiddleware(async_view))


# --- Redis away -----------------------------------------------------------------------------


async def test_requests_go_through_when_redis_is_away(settings, api_settings, caplog):
    api_settings(FAILED_AUTH_LIMIT="1/minute")
    key, secret = await make_key(name="x", scopes=["chat"], requests_per_minute=1, tokens_per_day=1)
    before = limits.UNAVAILABLE._value.get()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: refused at once

    started = time.monotonic()
    for _ in range(3):
        assert (await whoami("csk_wrong")).status_code == 401  # never 429
        response = await whoami(secret)
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response
    assert await ratelimit.count_tokens(key, 5) is None
    assert time.monotonic() - started < 5
    assert limits.UNAVAILABLE._value.get() > before
    assert "Redis at redis://127.0.0.1:1/0 is unreachable" in caplog.text
