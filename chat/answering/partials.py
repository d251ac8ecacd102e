"""Streamed text saved while it streams, so a crash or a restart loses at most a few seconds of
it: one database hop for all of this process's answers."""

import asyncio
import logging

from django.conf import settings

from chat import services
from chat.answering import registry
from runtime.aio import db

log = logging.getLogger(__name__)

# Streamed text waiting to be saved (message id → text so far), and the task saving it.
_unsaved: dict[int, str] = {}
_saver: asyncio.Task | None = None


def save_soon(message_id: int, text: str) -> None:
    """Every answer's text so far is saved in one database hop for all of this process's
    answers, at most every PARTIAL_SAVE_SECONDS: a write rate that does not grow with the
    number of streams (one hop per stream made 250 streams queue 125 writes a second ahead of
    new questions)."""
    global _saver
    _unsaved[message_id] = text
    if _saver is None or _saver.done() or _saver.get_loop() is not asyncio.get_running_loop():
        _saver = registry.spawn(_save_partials())


def forget(message_id: int) -> None:
    """The whole text is being stored: no partial save of it is due any more."""
    _unsaved.pop(message_id, None)


async def _save_partials() -> None:
    while _unsaved:
        texts = dict(_unsaved)
        _unsaved.clear()
        try:
            await db(services.bot_messages_save_partial)(texts=texts)
        except Exception:  # the next save, or the answer's end, stores the text
            log.exception("could not save %d partial answers", len(texts))
        await asyncio.sleep(settings.CHAT["PARTIAL_SAVE_SECONDS"])
