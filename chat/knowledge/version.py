"""The knowledge version: one Redis key every process reads before a search, changed after
every committed edit, so an edit or a deletion reaches the next question on every process.

The value is a random token, not a counter: if Redis loses its data, a counter could start
again at a number a process already holds and hide an edit; a token never repeats. A missing
key is the version "" (no edit since Redis started), different from any token.
"""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import redis

from runtime.redis_client import get_redis, get_sync_redis

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
    try:
        get_sync_redis().set(KEY, uuid.uuid4().hex)
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__
    return None


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
    try:
        return get_sync_redis().get(KEY) or ""
    except redis.RedisError as exc:
        log.warning("knowledge version unknown (Redis: %s)", exc)
        return None


async def current() -> str | None:
    try:
        return await get_redis().get(KEY) or ""
    except redis.RedisError as exc:
        log.warning("knowledge version unknown (Redis: %s)", exc)
        return None
