"""`{name}` placeholders in an action's templates (url, result, confirm_text).

A placeholder is a plain name, or names joined by dots (`{customer.id}`, `{order.status}`),
filled by a lookup the caller gives. Nothing else: no format specs, no attribute or index
access, no expressions. `str.format` is never used on a template, since a template is data an
admin typed and `format` would let `{0.__class__}` read Python objects.
"""

import re
from collections.abc import Callable

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_VALID = re.compile(rf"{NAME}(?:\.{NAME})*")


class MissingValue(LookupError):
    """The lookup has no value for a placeholder."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def names(template: str) -> list[str]:
    """The placeholders of `template`, in order, each once."""
    return list(dict.fromkeys(m.group(1) for m in _PLACEHOLDER.finditer(template)))


def problems(template: str) -> list[str]:
    """What is wrong with the template's braces and names, as sentences; empty when fine."""
    found = []
    for match in _PLACEHOLDER.finditer(template):
        if not _VALID.fullmatch(match.group(1)):
            found.append(
                f"{{{match.group(1)}}} is not a placeholder: use a plain name such as "
                "{order_id} (or names joined by dots, such as {customer.id})"
            )
    stray = _PLACEHOLDER.sub("", template)
    if "{" in stray or "}" in stray:
        found.append("has a { or } that opens or closes no placeholder")
    return found


def fill(template: str, value: Callable[[str], str]) -> str:
    """The template with each placeholder replaced by `value(name)`, which raises
    MissingValue when it has none."""
    return _PLACEHOLDER.sub(lambda m: value(m.group(1)), template)
