"""An action's customer-facing templates (`result`, `confirm_text`) in the customer's language.

Either field holds one template (text, for every conversation) or a mapping of language to
template, `{"en": "Cancel order {order_id}.", "zh": "取消订单 {order_id}。"}`. The template a
conversation gets: its language as given ("zh-TW"), then that language's primary part ("zh"),
then English, then the first one given, so a conversation in a language the action does not
speak still reads something, and the order of a file (or of admin's JSON) decides the last
resort.
"""

import re
from collections.abc import Callable

# A language tag as the conversation holds it: "en", "zh", "zh-TW", "pt-BR".
LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
FALLBACK_LANGUAGE = "en"


def template_for(value: object, language: str) -> str:
    """The template of `value` (text, or language → text) for a conversation in `language`;
    "" when there is none."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or not value:
        return ""
    wanted = (language or "").strip()
    primary = wanted.split("-")[0].lower()
    lowered = {str(key).lower(): text for key, text in value.items()}
    for key in (wanted.lower(), primary, FALLBACK_LANGUAGE):
        text = lowered.get(key)
        if isinstance(text, str) and key:
            return text
    first = next(iter(value.values()))
    return first if isinstance(first, str) else ""


def templates(value: object) -> list[str]:
    """Every template `value` holds (for the checks that apply to each)."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, dict):
        return [text for text in value.values() if isinstance(text, str) and text]
    return []


def problems(value: object, check: Callable[[str], list[str]]) -> list[str]:
    """What is wrong with `value` as a template or a mapping of language to template, each
    template's problems found by `check` and named with its language."""
    if isinstance(value, str):
        return check(value)
    if not isinstance(value, dict):
        return ['must be text, or a mapping of language to text ({"en": "...", "zh": "..."})']
    if not value:
        return ["names no language: leave it empty instead"]
    found = []
    for language, text in value.items():
        if not isinstance(language, str) or not LANGUAGE.fullmatch(language):
            found.append(f"{str(language)[:20]!r} is not a language code such as en, zh or pt-BR")
        elif not isinstance(text, str):
            found.append(f"{language}: must be text")
        else:
            found += [f"{language}: {problem}" for problem in check(text)]
    return found
