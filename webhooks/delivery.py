"""The delivery process's loop (manage.py run_webhooks): claim due outbox rows, POST each
signed body to its endpoint, record the outcome. Nothing here runs in a web request or in a
chat: a slow or failing receiver only ever holds up its own deliveries.

Order: a row is claimed only when it is the oldest pending one of its endpoint and
conversation (webhooks.selectors.deliverable), so the next one waits for it. Restart: every
row is in the database; a row held by a process that died is free again when its lease ends.
Delivery is at least once (a process killed between the receiver's 2xx and the UPDATE sends
that row again, with the same X-Desk-Delivery and event id): receivers drop repeats by id.
"""

import asyncio
import contextlib
import logging
import time

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from webhooks import metrics, selectors, services, signing

log = logging.getLogger("webhooks")

USER_AGENT = "cs-desk-webhooks/1"
LEASE_MARGIN_SECONDS = 5.0


class Deliverer:
    """Sends the outbox until `stop()`; up to `concurrency` deliveries at once."""

    def __init__(self, *, concurrency: int | None = None, poll_seconds: float | None = None):
        cfg = settings.WEBHOOKS
        self.concurrency = concurrency or cfg["CONCURRENCY"]
        self.poll_seconds = poll_seconds if poll_seconds is not None else cfg["POLL_SECONDS"]
        self.timeout = cfg["TIMEOUT_SECONDS"]
        # A claim outlives the longest try (bounded by the timeout) by a margin for recording
        # it: no other process takes a row this one is still sending. After a crash, the rows
        # it held wait this long.
        self.lease_seconds = self.timeout + LEASE_MARGIN_SECONDS
        self._stop = asyncio.Event()
        self._stats_at = 0.0

    def stop(self) -> None:
        self._stop.set()

    async def run(self, ready=None) -> None:
        inflight: set[asyncio.Task] = set()
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0))
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            if ready is not None:
                ready()
            stopping = asyncio.create_task(self._stop.wait())
            try:
                while not self._stop.is_set():
                    free = self.concurrency - len(inflight)
                    if free > 0:
                        for row in await self._claim(free):
                            inflight.add(asyncio.create_task(self._deliver(client, row)))
                    await self._update_queue_stats()
                    # Back as soon as a delivery ends (its conversation's next event may be
                    # due), a poll interval passes (new rows), or stop.
                    done, _ = await asyncio.wait(
                        {*inflight, stopping},
                        timeout=self.poll_seconds,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    inflight -= done
                    for task in done - {stopping}:
                        if task.exception() is not None:
                            # Its row stays claimed until the lease ends, then is tried again.
                            log.error(
                                "webhook delivery failed to record", exc_info=task.exception()
                            )
            finally:
                stopping.cancel()
                # Tries under way finish (each within the timeout) and are recorded, so a
                # stopped process sends nothing twice.
                if inflight:
                    await asyncio.gather(*inflight, return_exceptions=True)

    async def _claim(self, limit: int) -> list[services.Claimed]:
        try:
            return await sync_to_async(services.deliveries_claim)(
                limit=limit, lease_seconds=self.lease_seconds
            )
        except DatabaseError:
            # A busy or restarting database: try again at the next poll rather than crash.
            log.exception("could not claim webhook deliveries")
            return []

    async def _deliver(self, client: httpx.AsyncClient, row: services.Claimed) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            signing.EVENT_HEADER: row.event,
            signing.DELIVERY_HEADER: row.delivery_id,
            # Signed at each try: the timestamp is the try's, within the receiver's window.
            signing.SIGNATURE_HEADER: signing.signature_header(row.secret, row.body),
        }
        started = time.monotonic()
        status_code, error = None, ""
        try:
            # httpx's timeout bounds each read; this bounds the whole try, so a receiver that
            # answers a byte at a time cannot hold the row past its lease.
            async with asyncio.timeout(self.timeout):
                # The response body is never read: a receiver's answer is its status code.
                async with client.stream(
                    "POST", row.url, content=row.body.encode(), headers=headers
                ) as response:
                    status_code = response.status_code
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        metrics.LATENCY.observe(time.monotonic() - started)
        if status_code is not None and 200 <= status_code < 300:
            await sync_to_async(services.delivery_succeeded)(pk=row.pk, status_code=status_code)
            metrics.DELIVERIES.labels("delivered").inc()
            return
        if status_code is not None:
            error = f"HTTP {status_code}"
        outcome = await sync_to_async(services.delivery_failed)(
            pk=row.pk, status_code=status_code, error=error
        )
        metrics.DELIVERIES.labels(outcome).inc()
        log.warning(
            "webhook %s to %s failed (%s): %s",
            row.delivery_id,
            services.describe(row.url),
            error,
            "gave up" if outcome == "dead" else "will retry",
        )

    async def _update_queue_stats(self) -> None:
        # At most every few seconds: two aggregate queries, not on every loop turn.
        if time.monotonic() - self._stats_at < 5:
            return
        self._stats_at = time.monotonic()
        with contextlib.suppress(Exception):  # a metric must never stop deliveries
            depth, age = await sync_to_async(selectors.queue_stats)(timezone.now())
            metrics.QUEUE_DEPTH.set(depth)
            metrics.QUEUE_AGE.set(age)
