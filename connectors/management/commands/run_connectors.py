"""`python manage.py run_connectors`: read the channels' inboxes and send their outbox until
SIGINT or SIGTERM.

`make run` starts it beside the web and the worker, and starts it again if it crashes. With no
inbox configured it waits for one and says so once. Bot answers to mail run in this process:
it needs the channel layer (Redis) and an inference worker, as Daphne does.
"""

import asyncio
import signal

from django.core.management.base import BaseCommand

from connectors.running import Connectors


class Command(BaseCommand):
    help = "Read the channels' inboxes (IMAP) and send their outbox (SMTP)."

    def handle(self, *args, **options):
        asyncio.run(self._serve())
        self.stdout.write("connectors stopped")

    async def _serve(self) -> None:
        connectors = Connectors()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, connectors.stop)
        await connectors.run(ready=lambda: self.stdout.write("connectors ready", ending="\n"))
