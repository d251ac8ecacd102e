"""Process checks shared by the tests of the local Redis and the stack supervisor."""

from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while pid is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
