"""An action's `triggers`: regular expressions whose match in a customer's message picks the
action and fills one parameter, e.g. `{"pattern": "(?i)\\b(A\\d{4})\\b", "parameter":
"order_id"}` for order numbers.

Patterns are written in the syntax of Python's `re`, run by the `regex` library, which can
stop a search after a time limit: a pattern that backtracks without end (`(a+)+$`) costs one
message at most MATCH_TIMEOUT_SECONDS, not a process. Each pattern is compiled once per
process, and only the first MAX_TEXT_CHARS of a message are searched.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import TYPE_CHECKING

import regex

from chat.actions import schema

if TYPE_CHECKING:
    from chat.actions.models import Action

log = logging.getLogger(__name__)

MAX_TRIGGERS = 10
MAX_PATTERN_CHARS = 300
MAX_TEXT_CHARS = 2000
MATCH_TIMEOUT_SECONDS = 0.05
_KEYS = {"pattern", "parameter"}


def problems(triggers: object, *, parameters: object) -> list[str]:
    """What is wrong with an action's triggers, as sentences."""
    if triggers in (None, ""):
        return []
    if not isinstance(triggers, list):
        return ['must be a list of {"pattern": "...", "parameter": "..."}']
    if len(triggers) > MAX_TRIGGERS:
        return [f"at most {MAX_TRIGGERS} triggers"]
    found = []
    declared = schema.property_names(parameters)
    for number, trigger in enumerate(triggers, start=1):
        where = f"trigger {number}"
        if not isinstance(trigger, dict) or set(trigger) != _KEYS:
            found.append(f'{where}: must be {{"pattern": "...", "parameter": "..."}}, no more')
            continue
        pattern, parameter = trigger["pattern"], trigger["parameter"]
        if not isinstance(pattern, str) or not pattern:
            found.append(f"{where}: the pattern must be a regular expression")
        elif len(pattern) > MAX_PATTERN_CHARS:
            found.append(f"{where}: the pattern is longer than {MAX_PATTERN_CHARS} characters")
        else:
            try:
                groups = regex.compile(pattern).groups
            except regex.error as exc:
                found.append(f"{where}: the pattern does not compile: {exc}")
            else:
                if groups != 1:
                    found.append(
                        f"{where}: the pattern needs exactly one group ( ) around the value, "
                        f"it has {groups}; write other groups as (?: )"
                    )
        if parameter not in declared:
            found.append(f"{where}: {parameter!r} names no parameter (see parameters.properties)")
    return found


def matching_triggers(actions: list[Action], text: str) -> list[tuple[Action, dict]]:
    """(action, {parameter: value}) for each action with a trigger that matches the message,
    in the order of `actions`; each parameter filled by its first trigger that matches (an
    order number and an e-mail address in one message fill both). A match the parameter's
    own schema refuses (a pattern in it, a type) is no match."""
    text = (text or "")[:MAX_TEXT_CHARS]
    found = []
    for action in actions:
        filled: dict = {}
        for trigger in action.triggers or []:
            if not isinstance(trigger, dict) or trigger.get("parameter") in filled:
                continue
            value = _match(action, trigger, text)
            if value is not None:
                filled[trigger["parameter"]] = value
        if filled:
            found.append((action, filled))
    return found


def fill_missing(action: Action, arguments: dict, text: str) -> dict:
    """`arguments` with the required parameters they lack filled from `text` (an earlier
    message of the customer's) by the action's triggers: "Where is A1001?", then
    "ada@example.com"."""
    missing = [name for name in schema.required_names(action.parameters) if name not in arguments]
    if not missing:
        return arguments
    earlier = dict(next(iter(matching_triggers([action], text)), (None, {}))[1])
    return {**{k: v for k, v in earlier.items() if k in missing}, **arguments}


def _match(action: Action, trigger: object, text: str) -> object | None:
    if not isinstance(trigger, dict) or not isinstance(trigger.get("pattern"), str):
        return None
    compiled = _compiled(trigger["pattern"])
    if compiled is None or compiled.groups != 1:
        return None
    try:
        match = compiled.search(text, timeout=MATCH_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning(
            "Action %s: a trigger pattern took over %s s on one message and was skipped; "
            "simplify it.",
            action.name,
            MATCH_TIMEOUT_SECONDS,
        )
        return None
    if match is None or match.group(1) is None:
        return None
    name = trigger.get("parameter")
    for value in _candidates(action.parameters, name, match.group(1)):
        if schema.value_is_valid(action.parameters, name, value):
            return value
    return None


def _candidates(parameters: object, name: str, text: str) -> list[object]:
    """The matched text, and the number it spells for a numeric parameter."""
    declared = schema.property_type(parameters, name)
    types = declared if isinstance(declared, list) else [declared]
    found: list[object] = [text]
    if "integer" in types and text.strip().lstrip("-").isdigit():
        found.append(int(text))
    if "number" in types:
        try:
            found.append(float(text))
        except ValueError:
            pass
    return found


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> regex.Pattern | None:
    try:
        return regex.compile(pattern)
    except regex.error:
        return None
