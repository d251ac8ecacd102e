"""The support lead's reports page, /console/reports/ (staff only): the desk's numbers per day
as bar charts drawn here, as inline SVG: no JavaScript and nothing from outside (the product is
self-hosted). Each chart has a title, axis titles, values on the bars (up to a month of days) and
a tooltip per bar; the table under the charts has every number.

What the numbers count is in `agents.report_selectors`.
"""

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.shortcuts import render
from django.utils.formats import date_format
from django.views.decorators.http import require_GET

from agents import report_selectors
from agents.report_selectors import DayNumbers
from agents.views import staff_required

PERIODS = (7, 30, 90)
DEFAULT_PERIOD = 30

# SVG user units; the chart scales to the page width, text with it.
WIDTH, HEIGHT = 1000, 230
# Room for the y-axis title and tick labels on the left, the last day's label on the right.
PLOT_LEFT, PLOT_RIGHT = 70, WIDTH - 28
PLOT_TOP, PLOT_BOTTOM = 24, HEIGHT - 44  # room for values above bars; day labels and x title
VALUE_ROOM = 14  # under the deepest hanging bar, for its value
# Above this many days a bar is too narrow for its number: the tooltip and the table have it.
MAX_DAYS_WITH_VALUES = 31
BAR_SHARE = 0.7  # of a day's slot; the rest is the gap between bars


@staff_required
@require_GET
def reports(request):
    days = _period(request.GET.get("days"))
    numbers = report_selectors.daily_numbers(days=days)
    totals = report_selectors.period_totals(numbers)
    return render(
        request,
        "agents/reports.html",
        {
            "section": "reports",
            "days": days,
            "periods": PERIODS,
            "cards": cards(totals),
            "rows": [table_row(n) for n in reversed(numbers)],
            "first_day": numbers[0].day,
            "last_day": numbers[-1].day,
            "charts": charts(numbers),
        },
    )


def _period(value: str | None) -> int:
    try:
        days = int(value or DEFAULT_PERIOD)
    except ValueError:
        return DEFAULT_PERIOD
    return days if days in PERIODS else DEFAULT_PERIOD


# --- Figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    metric: str
    title: str
    figure: str
    detail: str


def cards(totals: DayNumbers) -> list[Card]:
    """The period's figures, at the top of the page."""
    share = totals.thumbs_up_share
    return [
        Card(
            "csat",
            "CSAT average",
            _or_dash(totals.csat_average, _one_decimal),
            f"{totals.csat_count} {_plural(totals.csat_count, 'score')} (1–5)",
        ),
        Card(
            "thumbs",
            "Thumbs up / down",
            f"{totals.thumbs_up} / {totals.thumbs_down}",
            f"{_percent(share * 100)} up" if share is not None else "no rating",
        ),
        Card(
            "fallback",
            "Fallback rate",
            _or_dash(totals.fallback_rate, _rate),
            f"{totals.fallbacks} of {totals.answers} {_plural(totals.answers, 'answer')}",
        ),
        Card(
            "handoff",
            "Hand-off rate",
            _or_dash(totals.handoff_rate, _rate),
            f"{totals.handoffs} of {totals.conversations} "
            f"{_plural(totals.conversations, 'conversation')}",
        ),
        Card("answers", "Answers", str(totals.answers), "by the bot, fallbacks included"),
    ]


def table_row(n: DayNumbers) -> dict[str, object]:
    """One day's numbers as the table shows them."""
    return {
        "day": n.day,
        "csat": (
            f"{_one_decimal(n.csat_average)} ({n.csat_count})"
            if n.csat_average is not None
            else "–"
        ),
        "thumbs_up": n.thumbs_up,
        "thumbs_down": n.thumbs_down,
        "fallback": (
            f"{_rate(n.fallback_rate)} ({n.fallbacks} / {n.answers})"
            if n.fallback_rate is not None
            else "–"
        ),
        "handoff": (
            f"{_rate(n.handoff_rate)} ({n.handoffs} / {n.conversations})"
            if n.handoff_rate is not None
            else "–"
        ),
        "answers": n.answers,
    }


# --- Charts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    label: str  # in tooltips and the legend, e.g. "thumbs up"
    kind: str  # the bars' CSS modifier (colour)
    values: Sequence[float | None]  # None: nothing to measure that day ("no data")
    format: Callable[[float], str]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str
    tooltip: str
    value: str  # printed by the bar; "" for none
    value_y: float

    @property
    def center(self) -> float:
        return round(self.x + self.width / 2, 1)


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    slug: str
    title: str
    summary: str  # one sentence with the period's figure, also the SVG's description
    y_title: str
    bars: list[Bar]
    no_data: list[Tick]  # days without a value, marked on the baseline
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    legend: list[Series]
    baseline: float
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PLOT_LEFT
    right: int = PLOT_RIGHT
    top: int = PLOT_TOP
    bottom: int = PLOT_BOTTOM

    @property
    def x_title_y(self) -> int:
        return self.height - 6

    @property
    def day_label_y(self) -> int:
        return self.bottom + 16

    @property
    def tick_label_x(self) -> int:
        return self.left - 6

    @property
    def nodata_y(self) -> float:
        return round(self.baseline - 3, 1)

    @property
    def y_title_x(self) -> int:
        return 16

    @property
    def middle_y(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def middle_x(self) -> float:
        return (self.left + self.right) / 2


def charts(numbers: list[DayNumbers]) -> list[Chart]:
    totals = report_selectors.period_totals(numbers)
    days = [n.day for n in numbers]
    csat = totals.csat_average
    return [
        bar_chart(
            slug="csat",
            title="CSAT average per day",
            y_title="CSAT (1–5)",
            days=days,
            above=Series("CSAT average", "csat", [n.csat_average for n in numbers], _one_decimal),
            scale_max=5,
            intervals=5,
            tick_format=_count,
            summary=(
                f"{_one_decimal(csat)} on average from {totals.csat_count} "
                f"{_plural(totals.csat_count, 'score')}."
                if csat is not None
                else "No CSAT score in this period."
            ),
        ),
        bar_chart(
            slug="thumbs",
            title="Thumbs up and down per day",
            y_title="Ratings",
            days=days,
            above=Series("thumbs up", "up", [n.thumbs_up for n in numbers], _count),
            below=Series("thumbs down", "down", [n.thumbs_down for n in numbers], _count),
            summary=f"{totals.thumbs_up} up, {totals.thumbs_down} down"
            + (
                f" ({_percent(totals.thumbs_up_share * 100)} up)."
                if totals.thumbs_up_share is not None
                else "."
            ),
        ),
        _rate_chart(
            slug="fallback",
            title="Fallback rate per day",
            label="fallback answers",
            kind="fallback",
            days=days,
            rates=[n.fallback_rate for n in numbers],
            rate=totals.fallback_rate,
            part=totals.fallbacks,
            whole=totals.answers,
            whole_name="answer",
        ),
        _rate_chart(
            slug="handoff",
            title="Hand-off rate per day",
            label="conversations handed to a person",
            kind="handoff",
            days=days,
            rates=[n.handoff_rate for n in numbers],
            rate=totals.handoff_rate,
            part=totals.handoffs,
            whole=totals.conversations,
            whole_name="conversation",
        ),
        bar_chart(
            slug="answers",
            title="Answers per day",
            y_title="Answers",
            days=days,
            above=Series("answers", "answers", [n.answers for n in numbers], _count),
            summary=f"{totals.answers} {_plural(totals.answers, 'answer')} in total.",
        ),
    ]


def _rate_chart(
    *,
    slug: str,
    title: str,
    label: str,
    kind: str,
    days: list[dt.date],
    rates: list[float | None],
    rate: float | None,
    part: int,
    whole: int,
    whole_name: str,
) -> Chart:
    summary = (
        f"{_percent(rate * 100)} over the period: {part} of {whole} {_plural(whole, whole_name)}."
        if rate is not None
        else f"No {whole_name} in this period."
    )
    return bar_chart(
        slug=slug,
        title=title,
        y_title="Share (%)",
        days=days,
        above=Series(label, kind, [None if r is None else r * 100 for r in rates], _percent),
        summary=summary,
        tick_format=_percent,
        max_cap=100,
    )


def bar_chart(
    *,
    slug: str,
    title: str,
    y_title: str,
    days: list[dt.date],
    above: Series,
    summary: str,
    below: Series | None = None,
    scale_max: float | None = None,
    intervals: int = 2,
    max_cap: float | None = None,
    tick_format: Callable[[float], str] | None = None,
) -> Chart:
    """Bars for `above`, one a day, rising from the baseline; those of `below` (if any) hang
    from it, on a scale of their own size, so up and down read as one diverging chart. A measured
    zero is printed on the rising bars, not on the hanging ones (a day would read "0 0")."""
    tick_format = tick_format or above.format
    top_max = scale_max or _nice_ceiling(max((v for v in above.values if v), default=0), max_cap)
    bottom_max = _nice_ceiling(max((v for v in below.values if v), default=0)) if below else 0
    lowest = PLOT_BOTTOM - VALUE_ROOM if below else PLOT_BOTTOM
    plot_height = lowest - PLOT_TOP
    baseline = PLOT_TOP + plot_height * top_max / (top_max + bottom_max)
    slot = (PLOT_RIGHT - PLOT_LEFT) / len(days)
    width = slot * BAR_SHARE
    show_values = len(days) <= MAX_DAYS_WITH_VALUES

    bars: list[Bar] = []
    no_data: list[Tick] = []
    for i, day in enumerate(days):
        x = PLOT_LEFT + i * slot + (slot - width) / 2
        when = _day_long(day)
        value = above.values[i]
        if value is None:
            no_data.append(Tick(round(x + width / 2, 1), f"{when}: no {above.label}"))
        else:
            height = (baseline - PLOT_TOP) * value / top_max
            bars.append(
                _bar(
                    x,
                    baseline - height,
                    width,
                    height,
                    above.kind,
                    f"{when}: {above.format(value)} {above.label}",
                    above.format(value) if show_values else "",
                    baseline - height - 4,
                )
            )
        if below is not None and below.values[i] is not None:
            value = below.values[i]
            height = (lowest - baseline) * value / bottom_max
            bars.append(
                _bar(
                    x,
                    baseline,
                    width,
                    height,
                    below.kind,
                    f"{when}: {below.format(value)} {below.label}",
                    below.format(value) if show_values and value else "",
                    baseline + height + 11,
                )
            )

    y_ticks = [
        Tick(
            round(baseline - (baseline - PLOT_TOP) * k / intervals, 1),
            tick_format(top_max * k / intervals),
        )
        for k in range(intervals + 1)
    ]
    if below is not None:
        y_ticks.append(Tick(lowest, tick_format(bottom_max)))
    return Chart(
        slug=slug,
        title=title,
        summary=summary,
        y_title=y_title,
        bars=bars,
        no_data=no_data,
        y_ticks=y_ticks,
        x_ticks=_day_ticks(days, slot),
        baseline=round(baseline, 1),
        legend=[above, below] if below else [above],
    )


def _bar(
    x: float,
    y: float,
    width: float,
    height: float,
    kind: str,
    tooltip: str,
    value: str,
    value_y: float,
) -> Bar:
    # One decimal is finer than a pixel, and keeps the page small.
    return Bar(
        round(x, 1),
        round(y, 1),
        round(width, 1),
        round(height, 1),
        kind,
        tooltip,
        value,
        round(value_y, 1),
    )


def _day_ticks(days: list[dt.date], slot: float) -> list[Tick]:
    """Every day of a week; weekly, counted back from the last day, for longer periods."""
    step = 1 if len(days) <= 14 else 7
    last = len(days) - 1
    short = "D j" if len(days) <= 7 else "M j"
    return [
        Tick(round(PLOT_LEFT + (i + 0.5) * slot, 1), date_format(day, short))
        for i, day in enumerate(days)
        if (last - i) % step == 0
    ]


def _nice_ceiling(value: float, cap: float | None = None) -> float:
    """The scale's top: the next round number (2, 4, 6, 8, 10, 20, 30, 40, 50, 60, 80, 100 …)
    at or above `value`, whose half, the middle tick, is a whole number too."""
    magnitude = 10 ** math.floor(math.log10(max(value, 1)))
    for step in (1, 2, 3, 4, 5, 6, 8, 10):
        top = step * magnitude
        if top >= max(value, 2) and (top / 2).is_integer():
            return min(top, cap) if cap else top
    raise AssertionError("unreachable: 10 × magnitude is always enough")


def _day_long(day: dt.date) -> str:
    return date_format(day, "D j M Y")


def _count(value: float) -> str:
    return f"{value:.0f}"


def _one_decimal(value: float) -> str:
    return f"{value:.1f}"


def _percent(value: float) -> str:
    """12%, but 2.5% and 0.4%: a small rate rounded to a whole number would read as 0%."""
    if value < 10 and value != int(value):
        return f"{value:.1f}%"
    return f"{value:.0f}%"


def _rate(share: float) -> str:
    return _percent(share * 100)


def _or_dash(value: float | None, format: Callable[[float], str]) -> str:
    return "–" if value is None else format(value)


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"
