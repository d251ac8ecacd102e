"""Reading one inbox's mailbox over IMAP, in a thread of its own (imap-tools is blocking):
new mail is handed to the event loop to be taken in, and only then flagged \\Seen, so a mail
is never lost; one read twice (a crash between the two) is known by its Message-ID and not
taken again. IMAP IDLE tells of new mail at once where the server has it; otherwise the
mailbox is read every IMAP_POLL_SECONDS. A server that goes away is connected to again,
waiting longer each time, with one log line for the outage and one for the recovery."""

import asyncio
import contextlib
import imaplib
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable

from django.conf import settings
from imap_tools import AND, MailBox, MailboxLoginError, MailBoxUnencrypted, MailMessageFlags
from imap_tools.errors import MailboxFolderSelectError, UnexpectedCommandStatusError

from connectors.email.servers import Server

log = logging.getLogger("connectors")
ERRORS = (
    OSError,
    imaplib.IMAP4.error,
    MailboxLoginError,
    MailboxFolderSelectError,
    UnexpectedCommandStatusError,
)


def connect(server: Server, timeout: float):
    if server.security == "tls":
        box = MailBox(
            server.host, server.port, timeout=timeout, ssl_context=ssl.create_default_context()
        )
    else:
        box = MailBoxUnencrypted(server.host, server.port, timeout=timeout)
        if "STARTTLS" in box.client.capabilities:
            box.client.starttls(ssl.create_default_context())
    return box.login(server.user, server.password, initial_folder=server.folder)


class MailboxReader(threading.Thread):
    """Reads `server` until `stop()`; `take(raw)` runs in `loop` for each new mail and must
    return once the mail is stored (or ignored)."""

    def __init__(
        self,
        *,
        name: str,
        server: Server,
        loop: asyncio.AbstractEventLoop,
        take: Callable[[bytes], Awaitable[str]],
    ) -> None:
        super().__init__(name=f"imap-{name}", daemon=True)
        self.label = name
        self.server = server
        self.loop = loop
        self.take = take
        self._halt = threading.Event()
        self._box = None
        self.connected = threading.Event()  # for tests and the log: up now

    def stop(self) -> None:
        """Ask the reader to end: at once, even in the middle of an IDLE (its socket is shut,
        which ends the wait); a mail being taken in is finished first."""
        self._halt.set()
        box = self._box
        if box is not None:
            with contextlib.suppress(OSError, AttributeError):
                box.client.sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        cfg = settings.CONNECTORS
        wait = cfg["RECONNECT_FIRST_SECONDS"]
        down = False
        while not self._halt.is_set():
            try:
                with connect(self.server, cfg["TIMEOUT_SECONDS"]) as box:
                    self._box = box
                    if down:
                        log.warning("inbox %s: mailbox %r is back", self.label, self.server)
                    else:
                        log.info("inbox %s: reading mailbox %r", self.label, self.server)
                    down, wait = False, cfg["RECONNECT_FIRST_SECONDS"]
                    self.connected.set()
                    self._read(box)
            except Exception as exc:
                self._box = None
                self.connected.clear()
                if self._halt.is_set():
                    return
                if not isinstance(exc, ERRORS):
                    log.exception("inbox %s: taking mail in failed", self.label)
                if not down:  # one line per outage, not one per try
                    log.warning(
                        "inbox %s: mailbox %r unreachable (%s: %s); trying again with backoff",
                        self.label,
                        self.server,
                        type(exc).__name__,
                        exc,
                    )
                down = True
                self._halt.wait(wait)
                wait = min(wait * 2, cfg["RECONNECT_MAX_SECONDS"])

    def _read(self, box) -> None:
        cfg = settings.CONNECTORS
        idle = "IDLE" in box.client.capabilities
        while not self._halt.is_set():
            for message in box.fetch(AND(seen=False), mark_seen=False, bulk=True):
                if self._halt.is_set():
                    return
                future = asyncio.run_coroutine_threadsafe(self.take(bytes(message.obj)), self.loop)
                future.result()  # raises what taking it raised: the mail stays unseen
                box.flag(message.uid, MailMessageFlags.SEEN, True)
            if idle:
                # Back on news of the mailbox, or to renew the IDLE (and look at the stop).
                box.idle.wait(timeout=cfg["IMAP_IDLE_SECONDS"])
            else:
                self._halt.wait(cfg["IMAP_POLL_SECONDS"])
