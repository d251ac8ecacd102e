"""Sending group events after the transaction that caused them commits (as Zulip does):
nobody hears of a change that was rolled back, and a Redis hiccup never undoes a write."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


def after_commit(*pairs: tuple[str, dict]) -> None:
    """Send each (group, event) once the current transaction commits (at once outside one).
    For synchronous code only: services run in a thread under database_sync_to_async."""

    def send() -> None:
        layer = get_channel_layer()
        for group, event in pairs:
            try:
                async_to_sync(layer.group_send)(group, event)
            except (RedisError, OSError) as exc:  # the write stands; live views catch up
                log.warning("could not send %s to %s (%s: %s)", event.get("type"), group,
                            type(exc).__name__, exc)
            except Exception:  # a bug: the write still stands
                log.exception("could not send %s to %s", event.get("type"), group)

    transaction.on_commit(send)
