"""The Redis that `make run` started, for commands run from another shell.

Without REDIS_URL, `make run` (devstack/stack.py) starts a private Redis on a unix socket and
gives its URL only to the processes it starts. A `manage.py import_knowledge` typed in another
terminal would talk to the default redis://127.0.0.1:6379 instead, and the running desk would
not hear of the import. So while that Redis runs its URL is kept in VAR_DIR/run/redis.url
(written once it answers, removed when the stack stops), and the settings use it when REDIS_URL
is not set.

After a crash the file and the socket file can outlive the server. The file is believed only
while its socket answers PING: a dead socket is never used, and the settings fall back to their
default. Only unix sockets are ever recorded, so the file carries no host and no password. No
Django and no Redis client here: the settings import this module in every process.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

FILE_NAME = "redis.url"
UNIX_SCHEME = "unix://"
# Long enough for a busy Redis on a loaded laptop; a dead socket refuses at once anyway.
PING_TIMEOUT = 0.5


def url_file(var_dir: Path) -> Path:
    return Path(var_dir) / "run" / FILE_NAME


def record(var_dir: Path, url: str) -> None:
    """Note the URL of the Redis this stack started. Written whole, then renamed into place,
    so a command starting at that moment reads the old file or the new, never half of one."""
    if not url.startswith(UNIX_SCHEME):
        raise ValueError(f"only a local unix-socket Redis is recorded, not {url!r}")
    path = url_file(var_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    partial.write_text(url + "\n", encoding="utf-8")
    partial.replace(path)


def forget(var_dir: Path, url: str) -> None:
    """Remove the record, if it is still this Redis's: a stack that crashed leaves it, and the
    next one (same VAR_DIR) records its own over it."""
    path = url_file(var_dir)
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8").strip() == url:
            path.unlink()


def find(var_dir: Path, timeout: float = PING_TIMEOUT) -> str | None:
    """The recorded URL when a Redis answers PING on its socket now, else None."""
    try:
        url = url_file(var_dir).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not url.startswith(UNIX_SCHEME):
        return None
    socket_path = url.removeprefix(UNIX_SCHEME).partition("?")[0]
    return url if answers_ping(socket_path, timeout) else None


def answers_ping(socket_path: str, timeout: float = PING_TIMEOUT) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(socket_path)
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n") and len(reply) < 256:
                chunk = conn.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"+PONG")
