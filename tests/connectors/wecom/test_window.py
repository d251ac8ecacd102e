"""The reply window: 5 messages within 48 hours of the customer's last message, while the bot
holds the session."""

from datetime import UTC, datetime, timedelta

import pytest

from connectors.wecom.window import MAX_REPLIES, REPLY_WINDOW, Refusal, ReplyWindow

WROTE = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _after(**delta) -> datetime:
    return WROTE + timedelta(**delta)


def test_nothing_may_go_before_the_customer_writes():
    verdict = ReplyWindow().verdict(now=WROTE)
    assert not verdict.allowed and verdict.refusal is Refusal.NO_CUSTOMER_MESSAGE


def test_five_messages_may_go_and_the_sixth_may_not():
    window = ReplyWindow().customer_wrote(WROTE)
    for sent in range(MAX_REPLIES):
        verdict = window.verdict(now=_after(minutes=sent))
        assert verdict.allowed and verdict.remaining == MAX_REPLIES - sent
        window = window.sent()
    verdict = window.verdict(now=_after(minutes=10))
    assert not verdict.allowed and verdict.refusal is Refusal.QUOTA_USED


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (_after(seconds=0), True),
        (_after(hours=47, minutes=59, seconds=59), True),
        (_after(hours=48), False),  # the end is not in the window
        (_after(hours=48, seconds=1), False),
    ],
)
def test_the_window_is_48_hours_from_the_customers_message(now, allowed):
    verdict = ReplyWindow().customer_wrote(WROTE).verdict(now=now)
    assert verdict.allowed is allowed
    assert verdict.closes_at == WROTE + REPLY_WINDOW
    if not allowed:
        assert verdict.refusal is Refusal.WINDOW_CLOSED


def test_a_new_customer_message_opens_a_new_window_with_a_fresh_count():
    window = ReplyWindow().customer_wrote(WROTE)
    for _ in range(MAX_REPLIES):
        window = window.sent()
    window = window.customer_wrote(_after(hours=47))
    verdict = window.verdict(now=_after(hours=60))
    assert verdict.allowed and verdict.remaining == MAX_REPLIES
    assert verdict.closes_at == _after(hours=47) + REPLY_WINDOW


def test_an_older_or_repeated_customer_message_changes_nothing():
    window = ReplyWindow().customer_wrote(WROTE).sent().sent()
    assert window.customer_wrote(WROTE) == window
    assert window.customer_wrote(_after(hours=-1)) == window


@pytest.mark.parametrize(
    ("state", "allowed"), [(0, True), (1, True), (2, False), (3, False), (4, False)]
)
def test_only_an_untreated_or_bot_held_session_may_be_sent_to(state, allowed):
    verdict = (
        ReplyWindow().customer_wrote(WROTE).verdict(now=_after(minutes=1), service_state=state)
    )
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.refusal is Refusal.NOT_WITH_BOT
