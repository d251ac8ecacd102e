"""`python manage.py run_webhooks`: send the webhook outbox until SIGINT or SIGTERM.

`make run` starts it beside the web and the worker, and starts it again if it crashes. More
than one may run (each row is claimed by one); the outbox is in the database, so a restart
picks up where the last process stopped.
"""

import asyncio
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand
from prometheus_client import start_http_server

from webhooks.delivery import Deliverer

log = logging.getLogger("webhooks")


class Command(BaseCommand):
    help = "Deliver outbound webhooks from the outbox (retries, backoff, order per conversation)."

    def handle(self, *args, **options):
        cfg = settings.WEBHOOKS
        if cfg["METRICS_PORT"]:
            start_http_server(cfg["METRICS_PORT"], addr=cfg["METRICS_HOST"])
        asyncio.run(self._serve())
        self.stdout.write("webhook delivery stopped")

    async def _serve(self) -> None:
        deliverer = Deliverer()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, deliverer.stop)
        await deliverer.run(ready=lambda: self.stdout.write("webhook delivery ready", ending="\n"))
