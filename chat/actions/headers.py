"""An action's `headers`: fixed values, and secrets named as `${NAME}`, read from the process's
environment at each call.

Secrets never enter the database: an admin stores `Authorization: Bearer ${SHOP_API_TOKEN}`
and the operator sets SHOP_API_TOKEN where the desk runs. That is why this module, unlike the
rest of the code, reads `os.environ` itself: the names are data, known only once an action
names them, and a rotated secret takes effect at the next call. A variable that is not set (or
empty) refuses the call, naming the variable: a call with an empty secret would fail at the
back end for a reason nobody could see. Values that look like a literal secret are refused on
save, and the desk's own secrets (SECRET_KEY, DATABASE_URL, ...) cannot be named at all.
"""

import os
import re

from django.conf import settings

from chat.env_secrets import DESK_VARIABLES, VARIABLE, MissingVariable
from chat.env_secrets import resolve as resolve_value

__all__ = ["DESK_VARIABLES", "VARIABLE", "MissingVariable", "problems", "resolve", "variables"]
# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers the HTTP client sets from the request itself; an action changing them could send
# the request somewhere else or break its framing.
_CLIENT_OWNED = frozenset({"host", "content-length", "transfer-encoding", "connection", "te"})
# Header names that carry credentials: a value of theirs must come from the environment.
_SECRET_NAME = re.compile(
    r"auth|token|secret|password|passwd|key|cookie|session|signature|credential", re.I
)
# Values that are credentials whatever the header's name.
_SECRET_VALUE = (
    re.compile(r"^\s*(bearer|basic|token|digest)\s+\S", re.I),
    # A long run of base64 / hex characters mixing letters and digits: an API key.
    re.compile(r"(?=[A-Za-z0-9_\-+/=.]*\d)(?=[A-Za-z0-9_\-+/=.]*[A-Za-z])[A-Za-z0-9_\-+/=.]{24,}"),
)
MAX_HEADERS = 20
MAX_VALUE_CHARS = 2000


def problems(headers: object) -> list[str]:
    """What is wrong with an action's headers, as sentences."""
    if not isinstance(headers, dict):
        return ['must be a JSON object of names and values, e.g. {"Accept-Language": "en"}']
    if len(headers) > MAX_HEADERS:
        return [f"at most {MAX_HEADERS} headers"]
    found = []
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            found.append(f"{name!r} is not a header name")
            continue
        if name.lower() in _CLIENT_OWNED:
            found.append(f"{name}: set by the desk from the request, not by an action")
            continue
        if not isinstance(value, str):
            found.append(f"{name}: the value must be text")
            continue
        if any(c in value for c in "\r\n\0") or len(value) > MAX_VALUE_CHARS:
            found.append(f"{name}: one line of at most {MAX_VALUE_CHARS} characters")
            continue
        variables = VARIABLE.findall(value)
        if "${" in VARIABLE.sub("", value):
            found.append(f"{name}: write an environment variable as ${{NAME}} (A-Z, 0-9, _)")
        own = sorted(v for v in variables if v in DESK_VARIABLES)
        if own:
            found.append(f"{name}: ${{{own[0]}}} is the desk's own secret; it is never sent")
        literal = VARIABLE.sub("", value)
        if (not variables and _SECRET_NAME.search(name)) or _looks_secret(literal):
            found.append(
                f"{name}: looks like a secret written into the action. Secrets are never "
                "stored: set it in an environment variable and write it as ${NAME}, e.g. "
                '"Bearer ${SHOP_API_TOKEN}"'
            )
    return found


def variables(headers: object) -> list[str]:
    """The environment variables the headers name, each once."""
    if not isinstance(headers, dict):
        return []
    found = (VARIABLE.findall(v) for v in headers.values() if isinstance(v, str))
    return list(dict.fromkeys(name for names in found for name in names))


def resolve(headers: dict) -> dict[str, str]:
    """The headers to send, each `${NAME}` replaced; MissingVariable for the first unset one."""
    return {name: resolve_value(value, _value) for name, value in headers.items()}


def _value(variable: str) -> str:
    value = os.environ.get(variable, "")
    if not value and variable == "SAMPLE_SHOP_TOKEN" and settings.ACTIONS["SAMPLE_SHOP"]:
        # The sample actions work with no variable set, as the sample shop does.
        return settings.ACTIONS["SAMPLE_SHOP_TOKEN"]
    return value


def _looks_secret(value: str) -> bool:
    return any(pattern.search(value) for pattern in _SECRET_VALUE)
