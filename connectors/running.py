"""The connectors process's loop (manage.py run_connectors): a reader for every enabled
inbox (started and stopped as inboxes are added, disabled or changed), and the sender of the
outbox. Nothing here runs in a web request: a slow mail server holds up only its own inbox.

Restart: what came in is in the database once taken (and the mailbox remembers what was taken:
\\Seen); what goes out is in the outbox, and a row held by a process that died is free again
when its lease ends. A row marked sent is never sent again; a crash between the server taking
a mail and the row being marked may send it once more, with the same Message-ID.
"""

import asyncio
import logging
from functools import partial

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError

from chat import answering
from chat.env_secrets import MissingVariable
from chat.models import Inbox
from connectors import kinds, selectors, services
from connectors.email import intake, servers
from connectors.email.mailbox import MailboxReader
from connectors.sending import Outgoing, SendFailed
from connectors.wecom.syncing import WeComSync

log = logging.getLogger("connectors")
LEASE_MARGIN_SECONDS = 5.0
CONCURRENCY = 4


class Connectors:
    def __init__(self, *, poll_seconds: float | None = None) -> None:
        cfg = settings.CONNECTORS
        self.poll_seconds = poll_seconds if poll_seconds is not None else cfg["POLL_SECONDS"]
        self.timeout = cfg["TIMEOUT_SECONDS"]
        self.lease_seconds = self.timeout + LEASE_MARGIN_SECONDS
        self.readers: dict[int, tuple[tuple, MailboxReader]] = {}
        self.answers: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self._said_idle = False
        self._broken: set[tuple] = set()
        self.wecom = WeComSync(answers=self.answers, timeout=self.timeout)

    def stop(self) -> None:
        self._stop.set()

    async def run(self, ready=None) -> None:
        if ready is not None:
            ready()
        inflight: set[asyncio.Task] = set()
        stopping = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                await self._tend_readers()
                await self.wecom.tick()
                free = CONCURRENCY - len(inflight)
                if free > 0:
                    for row in await self._claim(free):
                        inflight.add(asyncio.create_task(self._send(row)))
                done, _ = await asyncio.wait(
                    {*inflight, stopping},
                    timeout=self.poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                inflight -= done
                for task in done - {stopping}:
                    if task.exception() is not None:
                        log.error("an outgoing message failed to record", exc_info=task.exception())
        finally:
            stopping.cancel()
            readers = [reader for _, reader in self.readers.values()]
            for reader in readers:
                reader.stop()
            for reader in readers:
                await asyncio.to_thread(reader.join, self.timeout)
            # Sends under way finish (each within the timeout) and are recorded, so a
            # stopped process sends nothing twice; answers under way are saved as they are.
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            await self.wecom.stop()
            await answering.persist_all("shutdown")
            for task in list(self.answers):
                task.cancel()

    # --- in -----------------------------------------------------------------------------------

    async def _tend_readers(self) -> None:
        try:
            inboxes = await sync_to_async(selectors.enabled_inboxes)(Inbox.Kind.EMAIL)
            idle = not inboxes and not await sync_to_async(selectors.any_inbox_enabled)()
        except DatabaseError:
            log.exception("could not read the inboxes")
            return
        if idle and not self._said_idle:
            log.info("no inbox is enabled: waiting for one (manage.py add_channel email|wecom)")
        self._said_idle = idle
        wanted = {inbox.pk: inbox for inbox in inboxes}
        for pk in list(self.readers):
            version, reader = self.readers[pk]
            inbox = wanted.get(pk)
            if inbox is None or version != self._version(inbox) or not reader.is_alive():
                reader.stop()
                del self.readers[pk]
        for pk, inbox in wanted.items():
            if pk not in self.readers:
                reader = self._reader(inbox)
                if reader is not None:
                    reader.start()
                    self.readers[pk] = (self._version(inbox), reader)

    @staticmethod
    def _version(inbox: Inbox) -> tuple:
        return (repr(sorted(inbox.settings.items())), inbox.bot_mode)

    def _reader(self, inbox: Inbox) -> MailboxReader | None:
        try:
            server = servers.imap(kinds.resolved(inbox)["imap_url"])
        except (MissingVariable, servers.BadServerURL, KeyError) as exc:
            key = (inbox.pk, self._version(inbox))
            if key not in self._broken:  # said once per version of its settings
                self._broken.add(key)
                log.error("inbox %s (%s) cannot be read: %s", inbox.pk, inbox.name, _problem(exc))
            return None
        return MailboxReader(
            name=str(inbox.pk),
            server=server,
            loop=asyncio.get_running_loop(),
            take=partial(intake.take, inbox, answers=self.answers),
        )

    # --- out ----------------------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[Outgoing]:
        try:
            return await sync_to_async(services.outbound_claim)(
                limit=limit, lease_seconds=self.lease_seconds
            )
        except DatabaseError:
            log.exception("could not claim outgoing messages")
            return []

    async def _send(self, row: Outgoing) -> None:
        send = getattr(kinds.KINDS.get(row.inbox.kind), "send", None)
        try:
            if send is None:
                raise SendFailed(f"no sender for channels of kind {row.inbox.kind!r}")
            external_id = await send(row, self.timeout)
        except (SendFailed, MissingVariable, KeyError) as exc:
            error, final = _problem(exc), getattr(exc, "final", False)
        else:
            await sync_to_async(services.outbound_sent)(pk=row.pk, external_id=external_id)
            return
        outcome = await sync_to_async(services.outbound_failed)(pk=row.pk, error=error, final=final)
        log.warning(
            "sending %s of conversation %s failed (%s): %s",
            row.external_id or f"outbound row {row.pk}",
            row.conversation.pk,
            error,
            "gave up" if outcome == "dead" else "will retry",
        )


def _problem(exc: Exception) -> str:
    if isinstance(exc, MissingVariable):
        return f"the environment variable {exc.name} is not set"
    if isinstance(exc, KeyError):
        return f"the setting {exc.args[0]} is missing"
    return str(exc)
