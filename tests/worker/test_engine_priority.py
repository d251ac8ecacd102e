"""The engine's processes niced on a CPU host (inference_worker/engine_priority.py), on real
child processes of this one."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from inference_worker.engine_priority import (
    CPU_ENGINE_NICE,
    engine_niceness,
    nice_engine_processes,
)

# A child with a second thread, and a grandchild: every thread of both must be niced.
CHILD = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def parent():
    """A process of our own (niceness ours) with a child and a grandchild, as the worker has
    vLLM's engine core and its helpers."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, subprocess, sys; subprocess.Popen([sys.executable, '-c', {CHILD!r}]); os.read(0, 1)",
        ],
        stdin=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while len(psutil.Process(proc.pid).children(recursive=True)) < 2:
        assert time.monotonic() < deadline, "the test's processes did not start"
        time.sleep(0.05)
    yield psutil.Process(proc.pid)
    for process in psutil.Process(proc.pid).children(recursive=True):
        process.kill()
    proc.kill()
    proc.wait()


def niceness_of_threads(processes) -> set[int]:
    return {
        os.getpriority(os.PRIO_PROCESS, thread.id)
        for process in processes
        for thread in process.threads()
    }


def test_every_thread_of_every_child_is_niced_and_the_parent_is_not(parent):
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    wanted = max(ours, 7)
    children = parent.children(recursive=True)
    assert sum(len(p.threads()) for p in children) >= 3

    changed = nice_engine_processes(7, parent=parent.pid)

    assert changed == (sum(len(p.threads()) for p in children) if ours < 7 else 0)
    assert niceness_of_threads(children) == {wanted}
    assert niceness_of_threads([parent]) == {ours}
    # Asked again: nothing left to change; a lower niceness never lowers it back.
    assert nice_engine_processes(7, parent=parent.pid) == 0
    assert nice_engine_processes(3, parent=parent.pid) == 0
    assert niceness_of_threads(children) == {wanted}


def test_niceness_zero_changes_nothing(parent):
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert nice_engine_processes(0, parent=parent.pid) == 0
    assert niceness_of_threads(parent.children(recursive=True)) == {ours}


@pytest.mark.parametrize(
    ("setting", "on_cpu", "niceness"),
    [("auto", True, CPU_ENGINE_NICE), ("auto", False, 0), ("0", True, 0), ("19", False, 19)],
)
def test_the_setting(setting, on_cpu, niceness):
    assert engine_niceness(setting, on_cpu=on_cpu) == niceness


@pytest.mark.parametrize("setting", ["20", "-1", "high", ""])
def test_a_bad_setting_says_what_it_takes(setting):
    with pytest.raises(ValueError, match='INFERENCE_ENGINE_NICE is "auto" or a niceness'):
        engine_niceness(setting, on_cpu=True)
