"""The system prompt: the bot profile's template with the conversation's variables filled in."""

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass

from django.utils.translation import get_language_info

DEFAULT_PROFILE_NAME = "Customer service"

# The rules first and the same for every conversation, the conversation's own facts last: vLLM's
# prefix cache then reuses the rules across customers. The answer limit is said here and
# enforced by the worker all the same (inference_worker/textguards.py).
DEFAULT_SYSTEM_PROMPT = """\
You are a customer-service assistant. Rules:
- Answer the customer's question directly, in a few short sentences, with the facts from the \
help-centre passages you are given. Do not repeat the question.
- Never invent policies, prices, dates, products or order details. If the passages do not cover \
the question, say that you don't know and offer to connect the customer with a human agent.
- If you need details to help (an order number, an e-mail address), ask for them.
- If the customer is unhappy, apologise and offer a human agent.

Company: {site_name}. Current time: {current_time}. Customer's region: {user_region}. \
Answer in {language}, in {answer_limit}."""

# The prompt before the answer limit and the layout above; a profile still holding it word
# for word was never edited, and a migration moves it to the new default.
PREVIOUS_DEFAULT_SYSTEM_PROMPT = """\
You are the customer-service assistant of {site_name}. The current time is {current_time}. \
The customer is in {user_region} and writes in {language}: always answer in {language}.
- Be concise and friendly: a few sentences, or a short numbered list for steps.
- If you need details to help (an order number, an email address, a product name), ask for them.
- Never invent facts, prices, policies or order details. If you are not sure, say so and offer \
to connect the customer with a human agent.
- If the customer asks for a human, say that an agent will join the conversation."""


@dataclass(frozen=True)
class SamplingDefaults:
    temperature: float = 0.7
    top_p: float = 0.8
    # A ceiling in tokens only: the answer limit below ends answers long before it.
    max_tokens: int = 320
    # Against loops and repeated phrases (Qwen's recommended range is 0-2).
    frequency_penalty: float = 0.3
    # About 150 Chinese characters or 100 English words: what a customer reads in a chat.
    answer_max_words: int = 100
    answer_max_han: int = 150


@dataclass(frozen=True)
class Range:
    """Both ends allowed."""

    low: float
    high: float

    def clamp(self, value: float) -> float:
        return min(max(value, self.low), self.high)


@dataclass(frozen=True)
class SamplingRanges:
    """What a bot profile may hold and what one answer may be asked for (the APIs, the
    playground): one rule everywhere, so a value the API accepts is one a profile may hold and
    the worker gets as asked. Closed ranges, as every layer can state them (Django's and
    pydantic's validators, a form field's bounds, a clamp): top_p starts at 0.01, since vLLM
    refuses 0."""

    temperature: Range = Range(0.0, 2.0)
    top_p: Range = Range(0.01, 1.0)
    frequency_penalty: Range = Range(-2.0, 2.0)
    max_tokens: Range = Range(1, 8192)


def answer_limit(language: str, *, words: int, han: int) -> str:
    """The answer limit in the prompt's words, for the conversation's language."""
    if (language or "").lower().startswith("zh"):
        return f"at most {han} Chinese characters"
    return f"at most {words} words"


class _KeepUnknown(dict):
    """format_map mapping that leaves `{unknown}` as written: an admin's typo or a literal
    brace in the template must not break every answer."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def language_name(code: str) -> str:
    """English name of a BCP 47 tag ("zh-CN" → "Simplified Chinese"), or the tag itself."""
    if not code:
        return "the customer's language"
    for candidate in (code, code.lower(), code.split("-")[0].lower()):
        try:
            return get_language_info(candidate)["name"]
        except KeyError:
            continue
    return code


def local_time(now: dt.datetime, timezone: str) -> str:
    """The time in the customer's zone when known. Minute precision on purpose: the rendered
    prompt stays byte-identical for a minute, so vLLM's prefix cache serves follow-up turns."""
    try:
        zone = zoneinfo.ZoneInfo(timezone) if timezone else dt.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    local = now.astimezone(zone)
    return local.strftime("%A %Y-%m-%d %H:%M ") + (local.tzname() or "UTC")


# The variables that differ between conversations of one bot profile (extra ones a caller
# passes count too). Lines that name one go last (`laid_out`).
CONVERSATION_VARIABLES = frozenset(
    {"current_time", "user_region", "language", "site_name", "answer_limit"}
)
_VARIABLE = re.compile(r"(?<!\{)\{(\w+)\}(?!\})")


def laid_out(template: str, variables=CONVERSATION_VARIABLES) -> str:
    """The template with the lines that name a conversation's variables moved after the lines
    that name none (each group in the order written), so every conversation of a profile
    starts with the same text and vLLM's prefix cache reuses it, whatever order an admin
    wrote. A template whose first line names the time ("It is {current_time}. You are ...")
    would otherwise make every minute's prompt new from its first token."""
    lines = template.split("\n")
    varying = [any(n in variables for n in _VARIABLE.findall(line)) for line in lines]
    if not any(varying) or all(varying):
        return template
    fixed = [line for line, moves in zip(lines, varying, strict=True) if not moves]
    moved = [line for line, moves in zip(lines, varying, strict=True) if moves]
    while fixed and not fixed[-1].strip():
        fixed.pop()  # the blank line before the moved ones is added once below
    return "\n".join(fixed) + "\n\n" + "\n".join(moved)


def render_system_prompt(
    template: str,
    *,
    site_name: str,
    language: str,
    region: str,
    timezone: str,
    now: dt.datetime,
    extra: dict | None = None,
    max_words: int = SamplingDefaults.answer_max_words,
    max_han: int = SamplingDefaults.answer_max_han,
) -> str:
    variables = _KeepUnknown(
        current_time=local_time(now, timezone),
        user_region=region or "an unknown region",
        language=language_name(language),
        site_name=site_name,
        answer_limit=answer_limit(language, words=max_words, han=max_han),
    )
    variables.update(extra or {})
    return fill_template(laid_out(template, CONVERSATION_VARIABLES | set(extra or ())), variables)


def fill_template(template: str, variables: dict) -> str:
    """`{name}` replaced from variables; unknown names and broken braces stay as written."""
    try:
        return template.format_map(_KeepUnknown(variables))
    except (ValueError, IndexError, AttributeError):
        # A lone "{" or "{0}" in an admin-edited template: use it as written rather than fail.
        return template
