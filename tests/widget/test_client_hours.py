"""Business hours as the widget shows them: written by the server (chat/hours.py) in the
site's time zone and the conversation's language, sent in handoff.ack as
`business_hours_text` only outside the hours; the widget adds nothing of its own (its side is
tests/e2e/test_client_widget.py)."""

import datetime as dt

import pytest

from chat import frames, hours
from chat.models import Site

BERLIN = {"timezone": "Europe/Berlin", "mon-fri": "09:00-18:00", "sat": "10:00-14:00"}
SHOP = "https://shop.example.com"


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "Mon–Fri 09:00–18:00, Sat 10:00–14:00 (Europe/Berlin)"),
        ("", "Mon–Fri 09:00–18:00, Sat 10:00–14:00 (Europe/Berlin)"),
        ("zh-CN", "周一至周五 09:00–18:00，周六 10:00–14:00（Europe/Berlin）"),
        ("zh-TW", "周一至周五 09:00–18:00，周六 10:00–14:00（Europe/Berlin）"),
    ],
)
def test_hours_are_described_in_the_conversations_language(language, text):
    assert hours.describe(BERLIN, language=language) == text


def test_what_does_not_parse_is_left_out_and_an_unknown_zone_is_utc():
    assert (
        hours.describe(
            {
                "timezone": "Mars/Base",
                "fri-mon": "22:00-02:00",
                "xyz": "09:00-10:00",
                "sun": "closed",
                "tue": "9-5",
            }
        )
        == "Fri–Mon 22:00–02:00 (UTC)"
    )
    assert hours.describe({"mon": "08:30-12:00"}) == "Mon 08:30–12:00 (UTC)"  # no zone named
    assert hours.describe({}) == hours.describe({"timezone": "Europe/Berlin"}) == ""


@pytest.mark.parametrize(
    ("when", "text"),
    [
        ("2026-11-23 09:00", ""),  # Monday 10:00 in Berlin: open, nothing to say
        ("2026-11-23 17:30", "Mon–Fri 09:00–18:00, Sat 10:00–14:00 (Europe/Berlin)"),  # 18:30
        ("2026-11-29 10:00", "Mon–Fri 09:00–18:00, Sat 10:00–14:00 (Europe/Berlin)"),  # Sunday
    ],
)
def test_the_text_comes_only_outside_business_hours(when, text):
    assert hours.away_text(BERLIN, now=utc(when)) == text
    assert hours.away_text({}, now=utc(when)) == ""  # no hours kept: always open


def test_handoff_ack_carries_the_text_only_when_there_is_one():
    assert "business_hours_text" not in frames.handoff_ack_frame(business_hours=BERLIN)
    frame = frames.handoff_ack_frame(
        agents_available=False,
        ask_contact=True,
        business_hours=BERLIN,
        business_hours_text="Mon 09:00–10:00",
    )
    assert frame["business_hours_text"] == "Mon 09:00–10:00" and frame["business_hours"] == BERLIN


@pytest.mark.django_db(transaction=True)
async def test_a_handoff_outside_business_hours_is_answered_with_them_in_the_sites_zone(connect):
    never_open = {"timezone": "America/New_York", "mon-sun": "12:00-12:00"}  # an empty span
    site = await Site.objects.acreate(name="Shop", allowed_origins=SHOP, business_hours=never_open)
    client, _ = await connect(f"site={site.key}&lang=en", headers=[(b"origin", SHOP.encode())])
    await client.send({"type": "handoff.request"})
    ack = await client.receive()
    assert ack["type"] == "handoff.ack" and ack["ask_contact"] is True
    assert ack["business_hours_text"] == "Mon–Sun 12:00–12:00 (America/New_York)"


def test_hours_are_described_in_the_weeks_order_whatever_the_stored_order():
    from chat.hours import describe

    stored = {"sat": "10:00-14:00", "timezone": "Europe/Berlin", "mon-fri": "09:00-18:00"}
    assert describe(stored) == "Mon–Fri 09:00–18:00, Sat 10:00–14:00 (Europe/Berlin)"
