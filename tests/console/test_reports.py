"""The support lead's reports page, /console/reports/: staff only, the right numbers per day and
for the period, playground left out, and charts that carry their numbers."""

import datetime as dt
import re

import pytest
from django.test import Client
from django.utils import timezone

from agents import report_selectors, reports
from chat.models import Conversation, Feedback, Message

pytestmark = pytest.mark.django_db

URL = "/console/reports/"
UP, DOWN = Feedback.Rating.UP, Feedback.Rating.DOWN


def at(days_ago: int, hour: int = 12) -> dt.datetime:
    day = timezone.localdate() - dt.timedelta(days=days_ago)
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour)))


def conversation(days_ago: int, *, csat: int | None = None, **fields) -> Conversation:
    conv = Conversation.objects.create(
        token_hash="0" * 64, csat_score=csat, csat_at=at(days_ago, 13) if csat else None, **fields
    )
    Conversation.objects.filter(pk=conv.pk).update(created_at=at(days_ago))
    return conv


def say(conv: Conversation, days_ago: int, role: str, *, rating: str = "", **fields) -> None:
    message = Message.objects.create(conversation=conv, role=role, text=role, **fields)
    Message.objects.filter(pk=message.pk).update(created_at=at(days_ago))
    if rating:
        Feedback.objects.create(message=message, rating=rating)


@pytest.fixture
def desk():
    # Today: two conversations the customer wrote in (one handed off), one empty.
    a = conversation(0, csat=4)
    say(a, 0, "customer")
    say(a, 0, "bot", rating=UP)
    say(a, 0, "bot", rating=DOWN, is_fallback=True)
    b = conversation(0, csat=2, handoff_requested_at=at(0))
    say(b, 0, "customer")
    say(b, 0, "bot")
    conversation(0)  # the widget opened, nobody wrote: not counted
    # Yesterday: one conversation an agent answered in.
    d = conversation(1, csat=5)
    say(d, 1, "customer")
    say(d, 1, "bot", rating=DOWN)
    say(d, 1, "agent")
    # Staff in the playground today: counted nowhere.
    play = conversation(0, csat=1, channel=Conversation.Channel.PLAYGROUND)
    say(play, 0, "customer")
    for _ in range(3):
        say(play, 0, "bot", rating=UP, is_fallback=True)
    # Forty days ago: only in the 90-day view.
    old = conversation(40)
    say(old, 40, "customer")
    say(old, 40, "bot")


def staff_client(django_user_model, *, staff: bool = True) -> Client:
    user = django_user_model.objects.create_user(
        username="lead" if staff else "visitor", password="pw", is_staff=staff
    )
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_and_non_staff_are_sent_to_the_login(client, django_user_model):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/console/reports/"
    visitor = staff_client(django_user_model, staff=False)
    response = visitor.get(URL)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    response = visitor.get(URL, headers={"HX-Request": "true"})
    assert response.status_code == 403


def test_numbers_per_day(desk):
    numbers = report_selectors.daily_numbers(days=30)
    assert len(numbers) == 30
    assert numbers[-1].day == timezone.localdate()
    yesterday, today = numbers[-2], numbers[-1]
    assert (today.answers, today.fallbacks, today.thumbs_up, today.thumbs_down) == (3, 1, 1, 1)
    assert (today.conversations, today.handoffs) == (2, 1)
    assert (today.csat_count, today.csat_average) == (2, 3.0)
    assert today.fallback_rate == pytest.approx(1 / 3)
    assert today.handoff_rate == 0.5
    assert (yesterday.answers, yesterday.fallbacks, yesterday.thumbs_down) == (1, 0, 1)
    assert (yesterday.conversations, yesterday.handoffs, yesterday.csat_average) == (1, 1, 5.0)
    assert all(n == report_selectors.DayNumbers(day=n.day) for n in numbers[:-2])
    totals = report_selectors.period_totals(numbers)
    assert (totals.answers, totals.fallbacks, totals.thumbs_up, totals.thumbs_down) == (4, 1, 1, 2)
    assert (totals.conversations, totals.handoffs, totals.csat_count) == (3, 2, 3)
    assert totals.csat_average == pytest.approx(11 / 3)
    ninety = report_selectors.period_totals(report_selectors.daily_numbers(days=90))
    assert (ninety.answers, ninety.conversations) == (5, 4)


def test_page_shows_the_periods_figures_and_charts(django_user_model, desk):
    response = staff_client(django_user_model).get(URL)
    assert response.status_code == 200
    assert response.context["days"] == 30
    html = response.content.decode()
    cards = {c.metric: (c.figure, c.detail) for c in response.context["cards"]}
    assert cards == {
        "csat": ("3.7", "3 scores (1–5)"),
        "thumbs": ("1 / 2", "33% up"),
        "fallback": ("25%", "1 of 4 answers"),
        "handoff": ("67%", "2 of 3 conversations"),
        "answers": ("4", "by the bot, fallbacks included"),
    }
    for figure, detail in cards.values():
        assert f'<p class="reports__figure">{figure}</p>' in html
        assert detail in html
    # Five charts, each an image with a title and its summary; no script, nothing external.
    assert html.count('<svg class="chart__svg"') == 5
    for title in (
        "CSAT average per day",
        "Thumbs up and down per day",
        "Fallback rate per day",
        "Hand-off rate per day",
        "Answers per day",
    ):
        assert f">{title}</h2>" in html
    assert "3.7 on average from 3 scores." in html
    assert "25% over the period: 1 of 4 answers." in html
    assert not re.search(r"<script[^>]*src=\"https?://", html)
    # Today's bars say their numbers; the table has every day.
    today = timezone.localdate()
    when = f"{today:%a} {today.day} {today:%b %Y}"
    assert f"<title>{when}: 3 answers</title>" in html
    assert f"<title>{when}: 33% fallback answers</title>" in html
    assert f"<title>{when}: 3.0 CSAT average</title>" in html
    rows = response.context["rows"]
    assert len(rows) == 30 and rows[0]["day"] == today
    assert rows[0]["fallback"] == "33% (1 / 3)" and rows[0]["handoff"] == "50% (1 / 2)"
    assert rows[2]["csat"] == "–" and rows[2]["answers"] == 0
    assert 'aria-current="page">Reports</a>' in html


@pytest.mark.parametrize(
    "query, days",
    [("?days=7", 7), ("?days=90", 90), ("?days=abc", 30), ("?days=365", 30), ("", 30)],
)
def test_period_choice(django_user_model, desk, query, days):
    response = staff_client(django_user_model).get(URL + query)
    assert response.status_code == 200
    assert response.context["days"] == days
    assert len(response.context["rows"]) == days
    answers = next(c for c in response.context["cards"] if c.metric == "answers")
    assert answers.figure == ("5" if days == 90 else "4")


def test_chart_geometry():
    day = dt.date(2025, 3, 10)
    days = [day + dt.timedelta(days=i) for i in range(3)]
    series = reports.Series("answers", "answers", [10, 5, None], reports._count)
    chart = reports.bar_chart(
        slug="t", title="T", y_title="Answers", days=days, above=series, summary=""
    )
    tallest, half = chart.bars
    # Scale 0–10: the 10 reaches the top, the 5 half-way; the missing day is marked.
    assert (tallest.y, tallest.height) == (reports.PLOT_TOP, reports.PLOT_BOTTOM - reports.PLOT_TOP)
    assert half.height == pytest.approx(tallest.height / 2, abs=0.1)
    assert (tallest.value, half.value) == ("10", "5")
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    assert [m.label for m in chart.no_data] == ["Wed 12 Mar 2025: no answers"]
    # A quarter of days: too narrow for numbers on the bars.
    many = [day + dt.timedelta(days=i) for i in range(90)]
    wide = reports.bar_chart(
        slug="t",
        title="T",
        y_title="Answers",
        days=many,
        summary="",
        above=reports.Series("answers", "answers", [3] * 90, reports._count),
    )
    assert all(bar.value == "" for bar in wide.bars)
    assert len(wide.x_ticks) == 13  # weekly labels


def test_thumbs_chart_diverges_from_the_baseline():
    days = [dt.date(2025, 3, 10)]
    chart = reports.bar_chart(
        slug="thumbs",
        title="T",
        y_title="Ratings",
        days=days,
        summary="",
        above=reports.Series("thumbs up", "up", [4], reports._count),
        below=reports.Series("thumbs down", "down", [2], reports._count),
    )
    up, down = chart.bars
    assert up.y + up.height == chart.baseline == down.y
    # The deepest hangs to the bottom tick, with room under it for its number above the days.
    assert down.y + down.height == pytest.approx(chart.y_ticks[-1].position, abs=0.1)
    assert down.value_y < reports.PLOT_BOTTOM
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4", "2"]
