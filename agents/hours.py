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
    try:
        zone = zoneinfo.ZoneInfo(hours.get("timezone") or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    local = now.astimezone(zone)
    today = DAYS[local.weekday()]
    for days, span in hours.items():
        if days == "timezone" or today not in _days(days):
            continue
        start, end = _span(span)
        if start is not None and start <= local.time() < end:
            return True
    return False


def _days(key: str) -> list[str]:
    first, _, last = key.lower().partition("-")
    if first not in DAYS or (last and last not in DAYS):
        return []
    if not last:
        return [first]
    i, j = DAYS.index(first), DAYS.index(last)
    return DAYS[i:j + 1] if i <= j else DAYS[i:] + DAYS[:j + 1]


def _span(text: str) -> tuple[dt.time | None, dt.time | None]:
    try:
        start, end = (dt.time.fromisoformat(part.strip()) for part in str(text).split("-"))
    except ValueError:
        return None, None
    return start, end
