"""Business hours of a site, as kept in admin:

    {"timezone": "Europe/Berlin", "mon-fri": "09:00-18:00", "sat": "10:00-14:00"}

Day keys are a day ("sun") or a range ("mon-fri"); days not named are closed. An empty value
means always open.
"""

import datetime as dt
import zoneinfo

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def is_open(hours: dict, now: dt.datetime) -> bool:
    if not hours:
        return True
    local = now.astimezone(_zone(hours)[0])
    today = DAYS[local.weekday()]
    for days, span in hours.items():
        if days == "timezone" or today not in _days(days):
            continue
        start, end = _span(span)
        if start is not None and start <= local.time() < end:
            return True
    return False


# How hours are written for a customer, by language: day names, "to" between two days,
# the separator between spans, and the time zone's brackets.
_WORDS = {
    "en": (["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], "–", ", ", " ({})"),
    "zh": (["周一", "周二", "周三", "周四", "周五", "周六", "周日"], "至", "，", "（{}）"),
}


def describe(hours: dict, *, language: str = "en") -> str:
    """The hours as one line for a customer, with the zone they are in, e.g.
    "Mon–Fri 09:00–18:00, Sat 10:00–14:00 (Europe/Berlin)" or, for zh…,
    "周一至周五 09:00–18:00，周六 10:00–14:00（Europe/Berlin）". Entries that do not parse are
    left out; "" when none is left. The widget shows this text as it is (handoff.ack)."""
    names, to, separator, zone_format = _WORDS["zh" if language.lower().startswith("zh") else "en"]
    spans = []
    for days, span in hours.items():
        first, _, last = days.lower().partition("-")
        start, end = _span(span)
        if days == "timezone" or not _days(days) or start is None:
            continue
        named = names[DAYS.index(first)] + (to + names[DAYS.index(last)] if last else "")
        spans.append((DAYS.index(first), f"{named} {start:%H:%M}–{end:%H:%M}"))
    # In the week's order, not the stored one (PostgreSQL's jsonb keeps no key order).
    spans = [text for _, text in sorted(spans)]
    if not spans:
        return ""
    return separator.join(spans) + zone_format.format(_zone(hours)[1])


def away_text(hours: dict, *, now: dt.datetime | None = None, language: str = "en") -> str:
    """describe(hours) when `now` is outside them, so the customer learns when a human will
    answer; "" inside them or when the site keeps no hours."""
    if is_open(hours, now or dt.datetime.now(dt.UTC)):
        return ""
    return describe(hours, language=language)


def _zone(hours: dict) -> tuple[dt.tzinfo, str]:
    """The zone the hours are kept in, and its name; UTC when unnamed or unknown."""
    name = hours.get("timezone") or "UTC"
    try:
        return zoneinfo.ZoneInfo(name), name
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return dt.UTC, "UTC"


def _days(key: str) -> list[str]:
    first, _, last = key.lower().partition("-")
    if first not in DAYS or (last and last not in DAYS):
        return []
    if not last:
        return [first]
    i, j = DAYS.index(first), DAYS.index(last)
    return DAYS[i : j + 1] if i <= j else DAYS[i:] + DAYS[: j + 1]


def _span(text: str) -> tuple[dt.time | None, dt.time | None]:
    try:
        start, end = (dt.time.fromisoformat(part.strip()) for part in str(text).split("-"))
    except ValueError:
        return None, None
    return start, end
