"""The engine's compute yields to the desk's own processes on a CPU host.

On a small CPU host vLLM's compute threads take every core (INFERENCE_CPU_RESERVED_CORES), and
Daphne, Redis and this worker's loop run on the same cores. At equal priority the scheduler
shares a core evenly between a compute thread and Daphne admitting a wave of customers, so the
wave's requests reach the engine one after another while the first ones compute. Niced compute
gives the desk's processes the core whenever they have work (it is little: a few milliseconds
per message and per engine step) and leaves the engine every cycle they do not use.

Only the engine's processes (this worker's children: vLLM's engine core and its compute
threads) are niced; the worker's own loop, which streams the tokens to Daphne, is not. A thread
created later inherits the niceness of the thread that creates it, so the compute threads vLLM
starts after loading keep it too. Raising one's own niceness needs no privilege.
"""

from __future__ import annotations

import logging
import os

import psutil

log = logging.getLogger(__name__)

# On a CPU host: the desk's processes win a core at about nine times the compute's weight.
CPU_ENGINE_NICE = 10
# Passes over the engine's threads at most (nice_engine_processes): one more than a start-up
# that keeps spawning threads has needed.
_MAX_PASSES = 5


def engine_niceness(setting: str, *, on_cpu: bool) -> int:
    """INFERENCE_ENGINE_NICE as a niceness: "auto" is CPU_ENGINE_NICE on a CPU host and 0 on a
    GPU (where the engine process feeds the GPU, and slowing it idles the GPU)."""
    if setting == "auto":
        return CPU_ENGINE_NICE if on_cpu else 0
    if not setting.isdigit() or int(setting) > 19:
        raise ValueError(
            f'INFERENCE_ENGINE_NICE is "auto" or a niceness from 0 to 19, not {setting!r}'
        )
    return int(setting)


def nice_engine_processes(niceness: int, parent: int | None = None) -> int:
    """Give every thread of `parent`'s child processes (this process's by default) at least
    `niceness`. Returns the number of threads changed.

    Passes repeat until one changes nothing: a thread started, while a pass runs, by a thread
    that pass had not yet reached inherits the old niceness and is only seen by the next."""
    if niceness <= 0:
        return 0
    changed = 0
    for _ in range(_MAX_PASSES):
        this_pass = _nice_pass(niceness, parent)
        changed += this_pass
        if not this_pass:
            break
    return changed


def _nice_pass(niceness: int, parent: int | None) -> int:
    changed = 0
    for child in psutil.Process(parent).children(recursive=True):
        try:
            threads = child.threads()
        except psutil.Error:  # gone meanwhile (a helper that exited)
            continue
        for thread in threads:
            try:
                if os.getpriority(os.PRIO_PROCESS, thread.id) < niceness:
                    os.setpriority(os.PRIO_PROCESS, thread.id, niceness)
                    changed += 1
            except (ProcessLookupError, PermissionError) as exc:
                log.debug("thread %s of %s not niced: %r", thread.id, child.pid, exc)
    return changed
