"""Per-IP, per-site and per-conversation limits and answer slots against a real Redis server:
exact figures, shared across processes and reconnects, leaked slots expire, and a Redis that
is away lets customers through."""

import asyncio
import logging
import re
import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from chat import limits
from chat.frames import ErrorCode
from chat.limits import ChatLimits, storage_uri
from devstack.localredis import start_redis
from runtime.redis_client import PoolExhausted


@pytest.fixture(autouse=True)
async def close_limits():
    yield
    await limits.close()


@pytest.fixture
def chat_settings(settings):
    """chat_settings(KEY=value, ...) overrides settings.CHAT for one test."""

    def override(**values):
        settings.CHAT = {**settings.CHAT, **values}

    return override


def in_other_process(redis_url, work):
    """Run `work(ChatLimits)` on a limiter of its own in a new event loop on another thread:
    nothing is shared with the test's limiter but the Redis server, as between two Daphnes."""

    async def run():
        own = ChatLimits(redis_url)
        try:
            return await work(own)
        finally:
            await own.aclose()

    return asyncio.to_thread(asyncio.run, run())


# --- rate limits ---------------------------------------------------------------------------


async def test_the_configured_figure_is_exact_per_ip(chat_settings):
    chat_settings(IP_CONVERSATION_LIMIT="5/minute")
    for _ in range(5):
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="site_a") is None
    refusal = await limits.check_new_conversation(ip="198.51.100.1", site_key="site_a")
    assert refusal is not None
    assert refusal.code == ErrorCode.RATE_LIMITED == "rate_limited"
    assert 58 <= refusal.retry_after <= 60
    assert re.fullmatch(
        r"Too many new conversations from your network; try again in "
        r"\d+ seconds\.",
        refusal.message,
    )
    assert str(refusal.retry_after) in refusal.message
    # Other addresses, on the same site or another, are not affected.
    assert await limits.check_new_conversation(ip="198.51.100.2", site_key="site_a") is None
    assert await limits.check_new_conversation(ip="2001:db8::5", site_key="site_b") is None


async def test_limits_hold_across_processes(chat_settings, settings):
    chat_settings(IP_CONVERSATION_LIMIT="5/minute")
    ip = "203.0.113.77"

    async def three(own):
        return [await own.check_new_conversation(ip=ip, site_key="s") for _ in range(3)]

    first, second = await asyncio.gather(
        in_other_process(settings.REDIS_URL, three), in_other_process(settings.REDIS_URL, three)
    )
    outcomes = first + second
    assert outcomes.count(None) == 5  # six attempts from one IP in two processes: one refused
    assert await limits.check_new_conversation(ip=ip, site_key="s") is not None


async def test_a_new_socket_of_the_same_ip_is_still_limited(chat_settings):
    chat_settings(IP_CONVERSATION_LIMIT="3/minute", IP_MESSAGE_LIMIT="4/minute")
    ip = "198.51.100.30"
    # Three sockets, each starting a conversation, then a fourth after they all closed.
    for _ in range(3):
        assert await limits.check_new_conversation(ip=ip, site_key="s") is None
    assert await limits.check_new_conversation(ip=ip, site_key="s") is not None
    # Messages count per IP whichever conversation they are in.
    for conversation in ("c1", "c2", "c3", "c4"):
        assert await limits.check_message(ip=ip) is None, conversation
    refusal = await limits.check_message(ip=ip)
    assert refusal is not None and refusal.message.startswith("Too many messages from your")
    assert await limits.check_message(ip="198.51.100.31") is None


async def test_the_frame_limit_follows_the_conversation_across_reconnects(chat_settings):
    chat_settings(SOCKET_RATE_LIMIT="3/minute")
    for _ in range(3):
        assert await limits.check_frame(socket_id="chan.1", conversation_id="conv-1") is None
    # The customer reconnects: a new socket, the same conversation, the same budget.
    refusal = await limits.check_frame(socket_id="chan.2", conversation_id="conv-1")
    assert refusal is not None and refusal.code == ErrorCode.RATE_LIMITED
    assert "wait" in refusal.message and refusal.retry_after >= 1
    assert await limits.check_frame(socket_id="chan.2", conversation_id="conv-2") is None
    # Before a socket has a conversation it is counted on its own.
    for _ in range(3):
        assert await limits.check_frame(socket_id="chan.3") is None
    assert await limits.check_frame(socket_id="chan.3") is not None
    assert await limits.check_frame(socket_id="chan.4") is None


async def test_per_site_limit_counts_every_ip_and_spares_other_sites(chat_settings):
    chat_settings(SITE_CONVERSATION_LIMIT="3/minute", IP_CONVERSATION_LIMIT="2/minute")
    for n in range(3):
        assert await limits.check_new_conversation(ip=f"198.51.100.{n}", site_key="busy") is None
    refusal = await limits.check_new_conversation(ip="198.51.100.50", site_key="busy")
    assert refusal is not None and "try again in" in refusal.message
    assert "network" not in refusal.message  # not this customer's doing
    # Another site is not affected; the site's refusal did count against the IP, though.
    assert await limits.check_new_conversation(ip="198.51.100.50", site_key="calm") is None
    refusal = await limits.check_new_conversation(ip="198.51.100.50", site_key="calm")
    assert refusal is not None and "network" in refusal.message
    # A conversation refused by its IP does not use up the site's budget: two more fit.
    assert await limits.check_new_conversation(ip="198.51.100.61", site_key="calm") is None
    assert await limits.check_new_conversation(ip="198.51.100.62", site_key="calm") is None
    assert await limits.check_new_conversation(ip="198.51.100.63", site_key="calm") is not None


async def test_ipv6_clients_are_counted_per_64(chat_settings):
    chat_settings(IP_CONVERSATION_LIMIT="2/minute")
    assert await limits.check_new_conversation(ip="2001:db8:1:2::1", site_key="s") is None
    assert await limits.check_new_conversation(ip="2001:db8:1:2:ffff::9", site_key="s") is None
    assert await limits.check_new_conversation(ip="2001:db8:1:2::3", site_key="s") is not None
    assert await limits.check_new_conversation(ip="2001:db8:1:3::1", site_key="s") is None


async def test_a_client_without_an_address_is_not_limited_per_ip(
    chat_settings, caplog, monkeypatch
):
    """Not one shared bucket for every unknown client: that would refuse them all at once."""
    monkeypatch.setattr(limits, "_last_warning", {})
    chat_settings(
        IP_CONVERSATION_LIMIT="1/minute",
        IP_MESSAGE_LIMIT="1/minute",
        SITE_CONVERSATION_LIMIT="3/minute",
    )
    caplog.set_level(logging.WARNING, logger="chat.limits")
    for _ in range(3):
        assert await limits.check_new_conversation(ip="", site_key="s") is None
        assert await limits.check_message(ip="") is None
    assert await limits.check_new_conversation(ip="", site_key="s") is not None  # the site's
    warnings = [r.getMessage() for r in caplog.records if r.name == "chat.limits"]
    assert len(warnings) == 1 and "TRUSTED_PROXIES=unix" in warnings[0]


async def test_several_windows_and_an_empty_figure(chat_settings):
    chat_settings(IP_CONVERSATION_LIMIT="", SITE_CONVERSATION_LIMIT="2/second;3/minute")
    assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is None
    assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is None
    refusal = await limits.check_new_conversation(ip="198.51.100.1", site_key="s")
    assert refusal is not None and refusal.retry_after == 1
    assert refusal.message.endswith("try again in 1 second.")


# --- answer slots ----------------------------------------------------------------------------


async def test_answer_slots_per_site(chat_settings):
    chat_settings(SITE_CONCURRENT_ANSWERS=2)
    first = await limits.acquire_answer_slot(site_key="s")
    second = await limits.acquire_answer_slot(site_key="s")
    assert first is not None and second is not None and first.held and first.id != second.id
    assert await limits.acquire_answer_slot(site_key="s") is None
    assert await limits.acquire_answer_slot(site_key="other") is not None
    await limits.release_answer_slot(first)
    third = await limits.acquire_answer_slot(site_key="s")
    assert third is not None
    assert await limits.acquire_answer_slot(site_key="s") is None
    await limits.release_answer_slot(first)  # twice: harmless, frees nothing more
    assert await limits.acquire_answer_slot(site_key="s") is None


async def test_a_slot_leaked_by_a_crashed_process_expires(chat_settings, settings):
    chat_settings(SITE_CONCURRENT_ANSWERS=1, ANSWER_TIMEOUT_SECONDS=1.0)

    async def take_and_die(own):  # acquires, then its process is gone without releasing
        return await own.acquire_answer_slot(site_key="s")

    assert (await in_other_process(settings.REDIS_URL, take_and_die)) is not None
    assert await limits.acquire_answer_slot(site_key="s") is None
    await asyncio.sleep(1.1)  # the slot's time to live running out is the behaviour under test
    assert await limits.acquire_answer_slot(site_key="s") is not None


async def test_a_refreshed_slot_is_kept_and_a_lapsed_one_is_not(chat_settings):
    chat_settings(SITE_CONCURRENT_ANSWERS=1)
    slot = await limits.acquire_answer_slot(site_key="s", ttl=0.6)
    # The sleeps are the clock the time to live is measured by (the behaviour under test).
    await asyncio.sleep(0.4)
    assert await limits.refresh_answer_slot(slot, ttl=0.6) is True
    await asyncio.sleep(0.4)  # past the first expiry, within the refreshed one
    assert await limits.acquire_answer_slot(site_key="s") is None
    await asyncio.sleep(0.4)
    assert await limits.refresh_answer_slot(slot, ttl=0.6) is False
    assert await limits.acquire_answer_slot(site_key="s") is not None


async def test_no_slot_limit(chat_settings):
    chat_settings(SITE_CONCURRENT_ANSWERS=0)
    slots = [await limits.acquire_answer_slot(site_key="s") for _ in range(3)]
    assert all(slot is not None and not slot.held for slot in slots)


# --- a busy process: more checks at once than it has Redis connections ----------------------

FLOOD = 250  # checks at once in one process: a burst of that many customers' sockets


@pytest.mark.parametrize("pool_size", [4, None], ids=["pool_of_4", "configured_pool"])
async def test_limits_hold_when_more_checks_run_at_once_than_there_are_connections(
    chat_settings, settings, pool_size
):
    """Waiting for a connection is normal under load: it is no sign that Redis is away, so
    nothing fails open and every over-limit action is still refused."""
    if pool_size is not None:
        settings.REDIS_MAX_CONNECTIONS = pool_size
    chat_settings(IP_MESSAGE_LIMIT="5/minute", SITE_CONCURRENT_ANSWERS=3)
    assert limits._limits()._redis.connection_pool.max_connections < FLOOD
    unavailable, busy = limits.UNAVAILABLE._value.get(), limits.BUSY._value.get()

    checks = await asyncio.gather(*(limits.check_message(ip="198.51.100.9") for _ in range(FLOOD)))
    assert checks.count(None) == 5
    assert all(refusal.message.startswith("Too many messages") for refusal in checks if refusal)
    slots = await asyncio.gather(*(limits.acquire_answer_slot(site_key="s") for _ in range(FLOOD)))
    assert [slot.held for slot in slots if slot is not None] == [True] * 3
    assert limits.UNAVAILABLE._value.get() == unavailable
    assert limits.BUSY._value.get() == busy  # every check got a connection in time
    # Still counting afterwards: nothing set the limits aside.
    assert await limits.check_message(ip="198.51.100.9") is not None


async def test_a_check_that_gets_no_connection_in_time_refuses_as_busy(
    chat_settings, settings, monkeypatch, caplog
):
    """Redis answers, but the process's connections all stay busy past the wait: the action
    is refused with a short wait, and the other checks keep counting."""
    monkeypatch.setattr(limits, "_last_warning", {})
    monkeypatch.setattr(limits, "POOL_WAIT_SECONDS", 0.2)
    settings.REDIS_MAX_CONNECTIONS = 1
    chat_settings(IP_MESSAGE_LIMIT="1/minute", SITE_CONCURRENT_ANSWERS=1)
    caplog.set_level(logging.WARNING, logger="chat.limits")
    unavailable, busy = limits.UNAVAILABLE._value.get(), limits.BUSY._value.get()
    pool = limits._limits()._redis.connection_pool
    held = await pool.get_connection()  # as a command that takes long
    try:
        refusal = await limits.check_message(ip="198.51.100.7")
        assert refusal == limits.BUSY_REFUSAL and refusal.code == ErrorCode.RATE_LIMITED
        assert refusal.retry_after == 2 and refusal.message.endswith("try again in 2 seconds.")
        assert await limits.acquire_answer_slot(site_key="s") is None  # the fallback answers
    finally:
        await pool.release(held)
    assert limits.BUSY._value.get() == busy + 2
    assert limits.UNAVAILABLE._value.get() == unavailable
    warnings = [r.getMessage() for r in caplog.records if r.name == "chat.limits"]
    assert len(warnings) == 1 and "REDIS_MAX_CONNECTIONS" in warnings[0]
    # Nothing was set aside: the next checks count at once.
    assert await limits.check_message(ip="198.51.100.7") is None
    assert await limits.check_message(ip="198.51.100.7") is not None
    # The API's limits report failures through _unavailable: a busy pool sets nothing aside.
    limits._limits()._unavailable(PoolExhausted("no connection came free"))
    assert not limits._limits()._skipping()


async def test_a_redis_that_hangs_under_a_flood_still_fails_open(chat_settings, settings):
    """More checks than connections meet a Redis that never answers: those holding the
    connections time out and set the limits aside before the others give up waiting, so
    every customer is let through (none refused as busy), within two timeouts."""
    settings.REDIS_MAX_CONNECTIONS = 4
    chat_settings(IP_MESSAGE_LIMIT="1/minute")
    busy = limits.BUSY._value.get()
    accepted = []
    silent = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        started = time.monotonic()
        checks = await asyncio.gather(*(limits.check_message(ip="198.51.100.8") for _ in range(8)))
        assert checks == [None] * 8
        assert time.monotonic() - started < limits.REDIS_TIMEOUT_SECONDS * 3
        assert limits.BUSY._value.get() == busy
    finally:
        await limits.close()
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


# --- Redis away: fail open -----------------------------------------------------------------


async def test_limits_fail_open_when_redis_is_unreachable(
    chat_settings, settings, tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(limits, "_last_warning", {})
    chat_settings(
        IP_CONVERSATION_LIMIT="1/minute",
        SOCKET_RATE_LIMIT="1/minute",
        IP_MESSAGE_LIMIT="1/minute",
        SITE_CONCURRENT_ANSWERS=1,
    )
    settings.REDIS_URL = f"unix://{tmp_path}/nobody-listens.sock"
    caplog.set_level(logging.WARNING, logger="chat.limits")
    started = time.monotonic()
    for _ in range(3):
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is None
        assert await limits.check_message(ip="198.51.100.1") is None
        assert await limits.check_frame(socket_id="x", conversation_id="c") is None
        slot = await limits.acquire_answer_slot(site_key="s")
        assert slot is not None and not slot.held
        assert await limits.refresh_answer_slot(slot) is True
        await limits.release_answer_slot(slot)
    assert time.monotonic() - started < 1.0
    warnings = [r for r in caplog.records if r.name == "chat.limits"]
    assert len(warnings) == 1 and "not enforced" in warnings[0].getMessage()


async def test_a_redis_that_hangs_costs_one_timeout(chat_settings, settings):
    """A server that accepts connections and never answers: the first check waits out one
    timeout, the next ones do not wait at all."""
    chat_settings(IP_CONVERSATION_LIMIT="1/minute")
    accepted = []
    silent = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        started = time.monotonic()
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is None
        first = time.monotonic() - started
        assert limits.REDIS_TIMEOUT_SECONDS * 0.9 <= first < limits.REDIS_TIMEOUT_SECONDS * 1.8
        started = time.monotonic()
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is None
        assert await limits.acquire_answer_slot(site_key="s") is not None
        assert time.monotonic() - started < 0.1
    finally:
        await limits.close()
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_limits_come_back_with_redis(chat_settings, settings, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "SKIP_REDIS_AFTER_FAILURE_SECONDS", 0.1)
    chat_settings(IP_CONVERSATION_LIMIT="1/minute")
    server = start_redis(tmp_path)
    try:
        settings.REDIS_URL = server.url
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is None
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is not None
        server.stop()
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is None
        server = start_redis(tmp_path)  # the same socket path: a restart
        await asyncio.sleep(0.15)  # past SKIP_REDIS_AFTER_FAILURE_SECONDS: the back-off tested
        # Counters were in the lost Redis (it keeps nothing on disk): counting starts again.
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is None
        assert await limits.check_new_conversation(ip="198.51.100.1", site_key="s") is not None
    finally:
        server.stop()


# --- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redis_url, expected",
    [
        ("unix:///var/run/redis.sock", "async+redis+unix:///var/run/redis.sock"),
        ("unix:///var/run/redis.sock?db=2", "async+redis+unix:///var/run/redis.sock?db=2"),
        ("redis://127.0.0.1:6379/0", "async+redis://127.0.0.1:6379/0"),
        ("redis://redis/1", "async+redis://redis:6379/1"),
        ("redis://:secret@redis/0", "async+redis://:secret@redis:6379/0"),
        (
            "rediss://user:pw@cache.example.com:6380/0",
            "async+rediss://user:pw@cache.example.com:6380/0",
        ),
        ("redis://[::1]/0", "async+redis://[::1]:6379/0"),
    ],
)
def test_storage_uri(redis_url, expected):
    assert storage_uri(redis_url) == expected


async def test_a_bad_figure_is_a_configuration_error(chat_settings):
    chat_settings(IP_MESSAGE_LIMIT="lots")
    with pytest.raises(ImproperlyConfigured, match="CHAT_"):
        await limits.check_message(ip="198.51.100.1")


def test_a_limiter_is_built_for_each_kind_of_url():
    for url in ("unix:///tmp/x.sock", "redis://redis/0", "rediss://h:6380/0"):
        ChatLimits(url)  # `limits` accepts the URI and finds redis-py: no error
