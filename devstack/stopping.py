"""The stop request of `make run`: set from a signal handler, waited on by the supervisor.

A Python signal handler runs in the main thread between two bytecodes of whatever the main
thread was doing, and a second signal can run it again inside the first call. So a handler may
only do what is safe to re-enter. `threading.Event.set()` is not: it takes the event's lock, and
a SIGTERM to the process group arrives twice (once directly, once more when make forwards it);
the nested call then waits for ever on the lock the interrupted call holds, in the very thread
that would release it. Here setting is a plain attribute store plus one non-blocking write to a
pipe (no lock anywhere), and waiting is `select` on that pipe, so a stop is noticed at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from typing import Protocol


class Stop(Protocol):
    """What the supervisor waits on: a StopRequest, or a threading.Event in tests."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class StopRequest:
    """Set once, never cleared; set() is safe in a signal handler, even nested in itself."""

    def __init__(self) -> None:
        self._set = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        os.set_blocking(self._read, False)

    def set(self) -> None:
        already = self._set
        self._set = True
        if not already:
            # Wakes a wait() under way; the pipe is never read, so it stays readable. A full
            # pipe or a closed one (the process is exiting) needs no second wake-up.
            with contextlib.suppress(OSError):
                os.write(self._write, b"\0")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """True as soon as the stop is requested, False after timeout seconds without it."""
        if self._set:
            return True
        # A signal during select runs its handler, whose write makes the pipe readable; select
        # is resumed after a handler (PEP 475), so it returns at once.
        select.select([self._read], [], [], timeout)
        return self._set

    def close(self) -> None:
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install_stop_handlers() -> StopRequest:
    """Ctrl-C, SIGTERM and a closed terminal all mean: stop in order. Any number of them, in
    any order and nested in each other, is one stop request."""
    stop = StopRequest()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()  # nothing else: printing from here could deadlock on the output lock too

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    return stop
