"""The knowledge version: one Redis key every process reads before a search, changed after
every committed edit, so an edit or a deletion reaches the next question on every process (a
version token: runtime/version_tokens.py).
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from runtime import version_tokens

log = logging.getLogger(__name__)

KEY = "knowledge:version"


_held: ContextVar[bool] = ContextVar("knowledge_version_held", default=False)


def bump() -> None:
    """Make every process rebuild its index before its next search. Called after commit (see
    `services`): a process that sees the new token finds the edit in the database. A failure is
    logged, not raised: the edit is saved, and indexes older than KNOWLEDGE["INDEX_MAX_AGE_
    SECONDS"] are rebuilt anyway. Nothing inside `held()`: its caller bumps once at the end."""
    if _held.get():
        return
    error = tell()
    if error is not None:
        log.warning(
            "knowledge version not bumped (Redis: %s); other processes see the edit "
            "within KNOWLEDGE_INDEX_MAX_AGE_SECONDS",
            error,
        )


def tell() -> str | None:
    """Bump the version now, whatever `held` says; None when done, else what Redis said."""
    return version_tokens.change(KEY)


@contextmanager
def held() -> Iterator[None]:
    """Edits inside the block do not bump the version; the caller calls `tell` once after it.
    A bulk import then makes every process rebuild its index once rather than after each
    article, and learns whether the running processes heard of it."""
    token = _held.set(True)
    try:
        yield
    finally:
        _held.reset(token)


def current_sync() -> str | None:
    """The version, or None when Redis cannot be asked."""
    return version_tokens.current_sync(KEY)


async def current() -> str | None:
    return await version_tokens.current(KEY)
