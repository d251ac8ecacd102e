"""SIGTERM reaches every socket of a Daphne process, including one opened a moment before.

The customer sockets save the answers under way when Daphne cancels them on SIGTERM
(chat.answering.persist_all), so a restart must cancel every socket. A real Daphne serves a
small application (daphne_shutdown_app.py) whose sockets print when they are cancelled: one
socket opened seconds before the SIGTERM, one 0.2 s before it, while the HTTP request it was
upgraded from is still listed without an application.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_right_after_a_socket_opens(fix: bool) -> str:
    """Daphne's output: a socket open for 2.5 s, another opened, SIGTERM 0.2 s later."""
    port = free_port()
    daphne = subprocess.Popen(
        # -v 2: Twisted's own log too, where a failing shutdown trigger is reported.
        [sys.executable, "-m", "daphne", "-v", "2", "-p", str(port)]
        + ["tests.operations.daphne_shutdown_app:application"],
        cwd=ROOT,
        env={**os.environ, "DESK_SHUTDOWN_FIX": "1" if fix else "0"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        async def sockets() -> None:
            deadline = time.monotonic() + 60
            while True:
                try:
                    early = await connect(f"ws://127.0.0.1:{port}/early")
                    break
                except OSError:
                    assert daphne.poll() is None and time.monotonic() < deadline
                    await asyncio.sleep(0.2)
            await asyncio.sleep(2.5)  # Daphne's checker has long dropped its upgrade request
            late = await connect(f"ws://127.0.0.1:{port}/late")
            await asyncio.sleep(0.2)
            daphne.send_signal(signal.SIGTERM)
            await asyncio.sleep(1)
            for ws in (early, late):
                await ws.close()

        asyncio.run(sockets())
        output, _ = daphne.communicate(timeout=30)
    finally:
        if daphne.poll() is None:
            daphne.kill()
            daphne.wait()
    return output


def test_sigterm_cancels_every_socket_even_one_opened_just_before():
    output = stop_right_after_a_socket_opens(fix=True)
    assert "cancelled /early" in output and "cancelled /late" in output, output
    assert "Killed 2 pending application instances" in output, output
    assert "KeyError" not in output, output


def test_without_the_fix_daphne_cancels_nothing():
    # What runtime/daphne_shutdown.py is for: should a Daphne release pass this test, its
    # own trigger is sound and the module can go.
    output = stop_right_after_a_socket_opens(fix=False)
    assert "KeyError: 'application_instance'" in output, output
    assert "Killed" not in output, output
    assert "cancelled /early" not in output and "cancelled /late" not in output, output


def test_the_desks_asgi_module_installs_it_under_daphne():
    # The daphne command imports its server module before the application: so does this.
    check = (
        "import daphne.server, cs_site.asgi; from runtime import daphne_shutdown; "
        "assert daphne.server.Server.kill_all_applications is "
        "daphne_shutdown.kill_all_applications"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
