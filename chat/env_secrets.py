"""Secrets named `${NAME}` in stored configuration, read from the process's environment where
they are used: an action's headers (chat/actions/headers.py) and a channel's settings
(chat.models.Inbox). The stored value then holds no secret, and a rotated one takes effect at
the next use. This module, unlike the rest of the code, reads `os.environ` itself: the names
are data, known only once something names them.

What is written literally is shown masked wherever it is listed after it was entered (`mask`).
"""

import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The desk's own secrets and connection strings: nothing stored may name them.
DESK_VARIABLES = frozenset(
    {
        "SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "METRICS_BEARER_TOKEN",
        "DJANGO_SETTINGS_MODULE",
    }
)
MASK = "••••••"


class MissingVariable(LookupError):
    """A `${NAME}` whose variable is not set: whatever needed it is refused."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def resolve(value: str, lookup: Callable[[str], str] | None = None) -> str:
    """`value` with each `${NAME}` replaced by its variable; MissingVariable for the first one
    unset (or empty, or one of the desk's own)."""
    read = lookup or (lambda name: os.environ.get(name, ""))

    def one(match: re.Match) -> str:
        name = match.group(1)
        secret = "" if name in DESK_VARIABLES else read(name)
        if not secret:
            raise MissingVariable(name)
        return secret

    return VARIABLE.sub(one, value)


def names_desk_secret(value: str) -> str | None:
    """The first of the desk's own variables `value` names, if any."""
    return next((name for name in VARIABLE.findall(value) if name in DESK_VARIABLES), None)


def mask(value: str) -> str:
    """`value` as it may be shown: `${NAME}` references as written, anything else hidden."""
    if not value:
        return value
    return value if VARIABLE.fullmatch(value.strip()) else MASK


def mask_url(url: str) -> str:
    """A URL as it may be shown: its password hidden unless it is a `${NAME}`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=f"{user}:{mask(password)}@{hostport}"))
