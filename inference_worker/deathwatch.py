"""Say that a worker is gone the moment it dies, however it dies.

A worker leaves the presence set itself when it stops normally. Killed outright (SIGKILL, the
OOM killer, a segfault) it says nothing, and would count as live until its last heartbeat
expires (INFERENCE_WORKER_TTL_SECONDS): every question asked meanwhile waits that long for the
fallback. So each worker starts this small process (`python -m inference_worker.deathwatch`)
with a pipe to it as its standard input, the write end kept only by the worker. The kernel
closes that end when the worker ends, for whatever reason; the read here then returns end of
file, and this process removes the worker from the presence set (as its own `leave` would) and
exits. A worker that stopped normally has left already: the second removal changes nothing.

The Redis URL (it may carry a password) and the worker's name travel on the pipe, not on the
command line or in the environment, where `ps` would show them. The process stays in the
worker's process group, so whatever stops the group stops it too; it ignores SIGINT and
SIGTERM, which mean "stop" to the worker: it is to outlive the worker by a moment, and it
ends by itself right after.

No Django here, like the rest of the worker's presence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys

from redis.asyncio import Redis
from redis.exceptions import RedisError

from inference_worker.presence import WorkerPresence

log = logging.getLogger("inference_worker")

# How long the last word may take: Redis is local or near; one that does not answer in this
# time leaves the worker to expire by its heartbeat, as it would without this process.
LAST_WORD_TIMEOUT = 2.0


def start(redis_url: str, worker: str) -> subprocess.Popen[bytes] | None:
    """Start the watch over this process as `worker`; None if it could not start (the
    heartbeat's expiry still tells, later)."""
    try:
        watch = subprocess.Popen(
            [sys.executable, "-m", "inference_worker.deathwatch"],
            stdin=subprocess.PIPE,
            close_fds=True,
        )
    except OSError as exc:
        log.warning("could not start the deathwatch (%s): a crash shows after the TTL", exc)
        return None
    assert watch.stdin is not None
    watch.stdin.write(json.dumps({"redis_url": redis_url, "worker": worker}).encode() + b"\n")
    watch.stdin.flush()
    # The write end stays open in this process (and only here: pipes are not inherited by the
    # processes it starts later) until the process ends.
    return watch


async def _leave(redis_url: str, worker: str) -> None:
    redis = Redis.from_url(
        redis_url, socket_timeout=LAST_WORD_TIMEOUT, socket_connect_timeout=LAST_WORD_TIMEOUT
    )
    try:
        async with asyncio.timeout(LAST_WORD_TIMEOUT):
            # The TTL plays no part in leaving; the keys are the presence's own.
            await WorkerPresence(ttl=1).leave(redis, worker)
    finally:
        await redis.aclose()


def main() -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    first = stdin.readline()
    if not first:
        return 0  # the worker died before it said who it was: nothing to remove
    said = json.loads(first)
    while stdin.read(65536):  # nothing more is written: this returns only at the end
        pass
    try:
        asyncio.run(_leave(said["redis_url"], said["worker"]))
    except (RedisError, OSError, TimeoutError) as exc:  # the heartbeat expires by itself
        print(
            f"deathwatch: could not remove worker {said['worker']} ({exc.__class__.__name__})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
