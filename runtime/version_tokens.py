"""Version tokens: one Redis key per kind of data that every process keeps a copy of (the
knowledge index, the answers' configuration). A writer changes the token after every committed
edit; each process reads it before using its copy, and reads the data again when it changed.

The value is a random token, not a counter: if Redis loses its data, a counter could start
again at a number a process already holds and hide an edit; a token never repeats. A missing
key is the version "" (no edit since Redis started), different from any token.
"""

import logging
import uuid

import redis

from runtime.redis_client import get_redis, get_sync_redis

log = logging.getLogger(__name__)


def change(key: str) -> str | None:
    """Change the token now; None when done, else what Redis said."""
    try:
        get_sync_redis().set(key, uuid.uuid4().hex)
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__
    return None


def current_sync(key: str) -> str | None:
    """The token, or None when Redis cannot be asked."""
    try:
        return get_sync_redis().get(key) or ""
    except redis.RedisError as exc:
        log.warning("version %s unknown (Redis: %s)", key, exc)
        return None


async def current(key: str) -> str | None:
    try:
        return await get_redis().get(key) or ""
    except redis.RedisError as exc:
        log.warning("version %s unknown (Redis: %s)", key, exc)
        return None
