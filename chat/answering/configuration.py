"""What every answer reads of the desk's configuration (bot profiles, sites, actions), kept in
each process while a version token in Redis stays the same.

Read from the database, it cost three queries on the path of every question before its
request leaves (about 7 % of a Daphne process's time at 16 chats), for rows that change a few
times a month. Every committed save or deletion of those rows changes the token (signals
connected in chat/apps.py), and each question reads the token first (one Redis GET), so an
edit reaches the next question on every process (a version token, as the knowledge base's:
runtime/version_tokens.py). Without Redis nothing is cached, and no copy is used longer than
CHAT["CONFIGURATION_MAX_AGE_SECONDS"] (an edit made around the desk, or while Redis was
unreachable, changes no token).
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import transaction

from runtime import version_tokens

log = logging.getLogger(__name__)

KEY = "answer:configuration:version"

T = TypeVar("T")

_lock = threading.Lock()
_cache: dict[tuple, tuple[float, object]] = {}  # key → (when read, value)
_version: str | None = None


def read(key: tuple, reader: Callable[[], T]) -> T:
    """`reader()`, or what it returned before under the same `key` and token (in a database
    thread: the token is read with the synchronous client)."""
    global _version
    max_age = settings.CHAT["CONFIGURATION_MAX_AGE_SECONDS"]
    if max_age <= 0:
        return reader()
    version = version_tokens.current_sync(KEY)
    if version is None:  # Redis cannot say: read afresh
        return reader()
    now = time.monotonic()
    with _lock:
        if version != _version:
            _cache.clear()
            _version = version
        elif (kept := _cache.get(key)) is not None and now - kept[0] < max_age:
            return kept[1]  # type: ignore[return-value]
    value = reader()
    with _lock:
        # Read under an older token while an edit landed: dropped, the next read takes the new.
        if _version == version:
            _cache[key] = (now, value)
    return value


def forget() -> None:
    """Drop this process's copies (its next read goes to the database)."""
    global _version
    with _lock:
        _cache.clear()
        _version = None


def changed(**_) -> None:
    """A configuration row was saved or deleted (a signal's receiver): this process forgets at
    once, and every process once the change is committed (before that, another one would read
    the old rows again under the new token)."""
    forget()
    transaction.on_commit(_tell_every_process)


def _tell_every_process() -> None:
    forget()
    error = version_tokens.change(KEY)
    if error is not None:
        log.warning(
            "configuration version not changed (Redis: %s); other processes see the edit "
            "within %.0f s",
            error,
            settings.CHAT["CONFIGURATION_MAX_AGE_SECONDS"],
        )
