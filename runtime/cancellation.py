"""Keeping a cancelled task cancelled when redis-py loses the cancellation.

redis-py's asyncio client can swallow a `CancelledError` that lands while a command is under
way: the command completes (or fails with a connection error) and the caller goes on as if
nothing had happened (redis/redis-py#2028, #2551). A loop that awaits Redis and then waits for
more work would then never end: a stopping process, or a test's event loop, waits on it for
good. Such loops call `raise_if_cancelled()` after each Redis call. No Django here: the
inference worker's loops use it too.
"""

import asyncio


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop and has not yet."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
