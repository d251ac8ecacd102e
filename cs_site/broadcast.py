"""Sending group events after the transaction that caused them commits (as Zulip does):
nobody hears of a change that was rolled back, and a Redis hiccup never undoes a write."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)


def after_commit(*pairs: tuple[str, dict]) -> None:
    """Send each (group, event) once the current transaction commits (at once outside one).
    For synchronous code only: services run in a thread under database_sync_to_async."""

    def send() -> None:
        layer = get_channel_layer()
        for group, event in pairs:
            try:
                async_to_sync(layer.group_send)(group, event)
            except Exception:  # the write stands; live views catch up on reload
                log.warning("could not send %s to %s", event.get("type"), group, exc_info=True)

    transaction.on_commit(send)
