"""Async helpers: database hops from the event loop, and ending a task for good.

The rule for database hops from async code: every one goes through `db`
(`await db(selectors.conversation_history)(conversation_id=...)`), in consumers, views, the
answer run and commands alike; not `channels.db.database_sync_to_async`, asgiref's
`sync_to_async` or the async ORM (`aget`, `async for`).

Why `db`: it is Channels' `database_sync_to_async` (a `DatabaseSyncToAsync`), so each call
closes stale connections before and after it, as Django does around an HTTP request. A socket's
consumer needs that most: it lives for hours and never sends request_started or
request_finished, so without it a connection that broke (a database restart) or outlived
CONN_MAX_AGE would be handed to every later call on that thread. Plain `sync_to_async` and the
async ORM skip that step. What `db` adds is where the call runs: on PostgreSQL in a thread of a
pool, so one slow query does not hold up every other socket's and answer's database work, which
`database_sync_to_async` would queue on the one thread Channels runs all of it on.
"""

import asyncio
import functools

from channels.db import DatabaseSyncToAsync
from django.db import connection


def db(func):
    """`func` in a thread of a pool rather than on the one thread Channels runs all database
    work on: one slow query must not hold up every other conversation's answer. (Each call
    closes its connection after it, as database_sync_to_async does.)

    Except on SQLite (the embedded default), which lets one writer in at a time: there a pool
    only turns a burst of customers' writes into lock waits and retries (measured: answers
    then start late and all at once), so its calls keep to the one thread."""
    return DatabaseSyncToAsync(func, thread_sensitive=_sqlite())


@functools.cache
def _sqlite() -> bool:
    # Asked at the first hop, not at import: importing this module needs no configured project.
    return connection.vendor == "sqlite"


async def cancel_and_wait(task: asyncio.Task) -> None:
    """Cancel `task` and wait until it has ended. A channel-layer receive can lose one
    cancellation (redis-py's read timeout turns a cancel that coincides with it into a timeout,
    and channels-redis then reads again), so cancel again until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)
