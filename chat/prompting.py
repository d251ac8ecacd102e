"""The system prompt: the bot profile's template with the conversation's variables filled in."""

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from django.utils.translation import get_language_info

DEFAULT_PROFILE_NAME = "Customer service"

DEFAULT_SYSTEM_PROMPT = """\
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
    max_tokens: int = 384
    frequency_penalty: float = 0.0


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


def render_system_prompt(template: str, *, site_name: str, language: str, region: str,
                         timezone: str, now: dt.datetime, extra: dict | None = None) -> str:
    variables = _KeepUnknown(
        current_time=local_time(now, timezone),
        user_region=region or "an unknown region",
        language=language_name(language),
        site_name=site_name,
    )
    variables.update(extra or {})
    return fill_template(template, variables)


def fill_template(template: str, variables: dict) -> str:
    """`{name}` replaced from variables; unknown names and broken braces stay as written."""
    try:
        return template.format_map(_KeepUnknown(variables))
    except (ValueError, IndexError, AttributeError):
        # A lone "{" or "{0}" in an admin-edited template: use it as written rather than fail.
        return template
