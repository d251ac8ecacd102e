"""An action's `result`: the fields of the back end's JSON answer shown to the customer, as a
template such as `Order {order_id}: {status}, due {eta}`.

A placeholder names a field of the response object, or a field inside one (`{order.eta}`);
nothing else (no index, attribute or format access: see `placeholders`). A field that is
missing or null makes the response a bad one: the customer is told the lookup failed rather
than shown a sentence with a hole in it.
"""

import unicodedata

from chat.actions import placeholders

MAX_TEMPLATE_CHARS = 1000
# What one field and the whole text may show: a back end that answers with a novel is cut.
MAX_FIELD_CHARS = 300
MAX_TEXT_CHARS = 1500


class BadResponse(ValueError):
    """The response lacks what the template shows."""


def problems(template: str) -> list[str]:
    found = placeholders.problems(template)
    if len(template) > MAX_TEMPLATE_CHARS:
        found.append(f"at most {MAX_TEMPLATE_CHARS} characters")
    return found


def render(template: str, data: object) -> tuple[dict, str]:
    """(the fields shown, by placeholder, the text); BadResponse when one is missing."""
    fields: dict[str, object] = {}

    def value(name: str) -> str:
        current = data
        for part in name.split("."):
            if not isinstance(current, dict) or current.get(part) is None:
                raise BadResponse(f"the response has no {name}")
            current = current[part]
        shown = _shown(name, current)
        fields[name] = current if isinstance(current, str | int | float | bool) else shown
        return shown

    text = placeholders.fill(template, value)
    return fields, _clip(text, MAX_TEXT_CHARS)


def _shown(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int | float):
        return _clip(_printable(str(value)), MAX_FIELD_CHARS)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return _clip(_printable(", ".join(str(v) for v in value)), MAX_FIELD_CHARS)
    raise BadResponse(f"{name} is not a plain value (an object or a list of objects)")


def _printable(text: str) -> str:
    # Control characters from a back end would reach the customer's screen as they are.
    return "".join(
        c if c in "\n\t" or not unicodedata.category(c).startswith("C") else " " for c in text
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
