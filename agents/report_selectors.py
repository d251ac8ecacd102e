"""Reads for the support lead's reports page: the desk's numbers per day.

Playground conversations (staff trying the bot) are left out everywhere. Days are the desk's
TIME_ZONE days. What each number counts:

- answers: bot messages, fallback answers included; fallbacks: those the rules gave;
  thumbs up / down: the customer's rating on an answer, on the answer's day.
- conversations: those started that day in which the customer wrote at least once (the widget
  opens one on connect, so empty ones would dilute the rate); hand-offs: those of them that went
  to a person: hand-off requested, waiting or held by an agent, or with an agent's message.
- CSAT: end-of-chat scores, on the day they were given.
"""

import datetime as dt
from dataclasses import dataclass, fields

from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from chat.models import Conversation, Feedback, Message

Channel = Conversation.Channel


@dataclass(frozen=True)
class DayNumbers:
    """One day's counts, or a period's (`day` None); rates are None where nothing was counted."""

    day: dt.date | None = None
    answers: int = 0
    fallbacks: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    conversations: int = 0
    handoffs: int = 0
    csat_count: int = 0
    csat_sum: int = 0

    @property
    def fallback_rate(self) -> float | None:
        return self.fallbacks / self.answers if self.answers else None

    @property
    def handoff_rate(self) -> float | None:
        return self.handoffs / self.conversations if self.conversations else None

    @property
    def csat_average(self) -> float | None:
        return self.csat_sum / self.csat_count if self.csat_count else None

    @property
    def thumbs_up_share(self) -> float | None:
        rated = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / rated if rated else None


def daily_numbers(*, days: int, today: dt.date | None = None) -> list[DayNumbers]:
    """The last `days` days up to `today` (default: the desk's today), oldest first, every day
    present (zeros where nothing happened). Three grouped queries, whatever the period."""
    today = today or timezone.localdate()
    first_day = today - dt.timedelta(days=days - 1)
    start = timezone.make_aware(dt.datetime.combine(first_day, dt.time.min))
    end = timezone.make_aware(dt.datetime.combine(today + dt.timedelta(days=1), dt.time.min))
    counts: dict[dt.date, dict[str, int]] = {}

    def add(rows) -> None:
        for row in rows:
            day = row.pop("day")
            counts.setdefault(day, {}).update({k: v or 0 for k, v in row.items()})

    add(_answers_per_day(start, end))
    add(_conversations_per_day(start, end))
    add(_csat_per_day(start, end))
    return [
        DayNumbers(
            day=first_day + dt.timedelta(days=i), **counts.get(first_day + dt.timedelta(days=i), {})
        )
        for i in range(days)
    ]


def period_totals(days: list[DayNumbers]) -> DayNumbers:
    """The days added up: rates and averages over the whole period, not means of the days'."""
    names = [f.name for f in fields(DayNumbers) if f.name != "day"]
    return DayNumbers(**{name: sum(getattr(d, name) for d in days) for name in names})


def _day(field: str):
    return TruncDate(field, tzinfo=timezone.get_current_timezone())


def _answers_per_day(start: dt.datetime, end: dt.datetime):
    up, down = Feedback.Rating.UP, Feedback.Rating.DOWN
    return (
        Message.objects.filter(role=Message.Role.BOT, created_at__gte=start, created_at__lt=end)
        .exclude(conversation__channel=Channel.PLAYGROUND)
        .annotate(day=_day("created_at"))
        .values("day")
        .annotate(
            answers=Count("pk"),
            fallbacks=Count("pk", filter=Q(is_fallback=True)),
            thumbs_up=Count("pk", filter=Q(feedback__rating=up)),
            thumbs_down=Count("pk", filter=Q(feedback__rating=down)),
        )
        .order_by()
    )


def _conversations_per_day(start: dt.datetime, end: dt.datetime):
    messages = Message.objects.filter(conversation=OuterRef("pk"))
    handed_off = (
        Q(handoff_requested_at__isnull=False)
        | Q(status__in=[Conversation.Status.WAITING, Conversation.Status.HUMAN])
        | Q(Exists(messages.filter(role=Message.Role.AGENT)))
    )
    return (
        Conversation.objects.filter(created_at__gte=start, created_at__lt=end)
        .exclude(channel=Channel.PLAYGROUND)
        .filter(Exists(messages.filter(role=Message.Role.CUSTOMER)))
        .annotate(day=_day("created_at"))
        .values("day")
        .annotate(conversations=Count("pk"), handoffs=Count("pk", filter=handed_off))
        .order_by()
    )


def _csat_per_day(start: dt.datetime, end: dt.datetime):
    # csat_at is set with the score; rows scored before it existed fall back to their start.
    scored_at = Coalesce("csat_at", "created_at")
    return (
        Conversation.objects.filter(csat_score__isnull=False)
        .exclude(channel=Channel.PLAYGROUND)
        .alias(scored_at=scored_at)
        .filter(scored_at__gte=start, scored_at__lt=end)
        .annotate(day=TruncDate(scored_at, tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(csat_count=Count("pk"), csat_sum=Sum("csat_score"))
        .order_by()
    )
