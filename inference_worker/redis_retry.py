"""Backoff for a worker loop while Redis is unreachable.

Redis is transport only, and it may restart under a running worker: a loop that loses it
retries with backoff instead of dying, and warns once per outage.
"""

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from inference_worker import metrics
from runtime.cancellation import raise_if_cancelled

log = logging.getLogger("inference_worker")

# What the channel layer raises when Redis is unreachable or restarting (redis-py's
# ConnectionError and TimeoutError are RedisErrors; socket errors are OSErrors).
REDIS_DOWN = (RedisError, OSError)
# Retry delays while Redis is unreachable: quick at first (a restart takes well under a
# second), then every 2 s so that a long outage does not spin.
_FIRST_RETRY, _LAST_RETRY = 0.1, 2.0


class RedisRetry:
    """Backoff for one loop while Redis is unreachable, with one warning per outage."""

    def __init__(self, what: str, on_failure: Callable[[], None]):
        self.what = what
        self.on_failure = on_failure
        self.delay = _FIRST_RETRY
        self.failing = False

    async def failed(self, exc: BaseException) -> None:
        raise_if_cancelled()  # redis-py reports a cancellation mid-read as a lost connection
        if not self.failing:
            self.failing = True
            metrics.REDIS_OUTAGES.inc()
            log.warning(
                "%s: Redis unreachable (%s: %s); retrying", self.what, exc.__class__.__name__, exc
            )
        self.on_failure()
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, _LAST_RETRY)

    def succeeded(self) -> None:
        if self.failing:
            log.info("%s: Redis reachable again", self.what)
        self.failing = False
        self.delay = _FIRST_RETRY
