"""Tie vLLM's engine processes to the worker that started them, however the worker ends.

vLLM runs its engine in processes of its own (on the CPU backend: an EngineCore process, which
starts a model-runner process in turn). A worker that stops normally shuts them down. A worker
killed outright (SIGKILL, the OOM killer, a segfault) runs no cleanup: its engine processes are
reparented to PID 1 and live on, each holding gigabytes of memory (on a GPU, the device memory
the next worker needs to start). Killing the worker's process group helps only when whoever
killed the worker does it, which `kill -9 PID` does not.

Linux can do it in the kernel: `prctl(PR_SET_PDEATHSIG, SIGKILL)` in a child asks for SIGKILL
the moment its parent exits, for whatever reason. vLLM starts engine processes with
multiprocessing's "spawn" method, and a spawned child imports its parent's main script again
under the name `__mp_main__` before it runs anything else, so manage.py calls
`tie_to_parent()` there; the engine's own children import the same script and tie themselves
to the engine process, and so on down the tree. Elsewhere than Linux this is a no-op.

The parent may already be gone by the time the child gets to ask, and the kernel would then
never send the signal. So every process that may spawn records its pid in the environment its
children inherit (`record_parent`), and a child that finds a different parent ends itself.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_PID_ENV = "CS_LIFELINE_PARENT_PID"


def record_parent() -> None:
    """Tell the spawn children this process starts which pid their parent has."""
    os.environ[PARENT_PID_ENV] = str(os.getpid())


def tie_to_parent(sig: signal.Signals = signal.SIGKILL) -> bool:
    """Have the kernel send sig to this process when its parent exits; False where it can't.

    The request is made per process (it is not inherited across fork), which is why each
    spawned process makes it for itself. Note that Linux sends the signal when the *thread*
    that started this process exits; vLLM starts its processes from the main thread.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    expected = os.environ.get(PARENT_PID_ENV, "")
    if expected.isdigit() and os.getppid() != int(expected):
        # Orphaned before the request was made: the signal will never come, so act as if it had.
        os.kill(os.getpid(), sig)
    record_parent()
    return True
