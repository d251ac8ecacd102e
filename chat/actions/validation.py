"""Whether an action's definition can be saved: every field checked, every problem named with
its field, so admin shows it beside the field and an import names the action and the field.
The field validators Django runs (lengths, choices, bounds) come on top of these."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chat.actions import (
    headers,
    localized,
    placeholders,
    results,
    schema,
    triggers,
    url_template,
)

if TYPE_CHECKING:
    from chat.actions.models import Action

MAX_CONFIRM_TEXT_CHARS = 500


def action_problems(action: Action) -> dict[str, list[str]]:
    """{field: [sentence, ...]} for each field with a problem; empty when it can be saved."""
    found: dict[str, list[str]] = {
        "parameters": schema.problems(action.parameters),
        "headers": headers.problems(action.headers),
        "result": localized.problems(action.result, results.problems),
        "confirm_text": _confirm_text_problems(action),
        "triggers": triggers.problems(action.triggers, parameters=action.parameters),
    }
    if not found["parameters"]:
        # Checked against the parameters only once they are a schema, or every placeholder
        # would be reported a second time.
        found["url"] = url_template.problems(
            _text(action.url), parameters=action.parameters, audience=action.audience
        )
    else:
        found["url"] = placeholders.problems(_text(action.url))
    return {field: problems for field, problems in found.items() if problems}


def _confirm_text_problems(action: Action) -> list[str]:
    declared = schema.property_names(action.parameters)

    def check(text: str) -> list[str]:
        found = placeholders.problems(text)
        for name in placeholders.names(text):
            if name not in declared:
                found.append(f"{{{name}}} names no parameter (it shows the call's arguments)")
        if len(text) > MAX_CONFIRM_TEXT_CHARS:
            found.append(f"at most {MAX_CONFIRM_TEXT_CHARS} characters")
        return found

    found = localized.problems(action.confirm_text, check)
    if localized.templates(action.confirm_text) and not action.confirm:
        found.append("is only asked when confirm is on")
    return found


def _text(value: object) -> str:
    # A field Django could not make text of has its own error already.
    return value if isinstance(value, str) else ""
