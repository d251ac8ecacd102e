"""What happened on the desk, for whoever listens: the outbound webhooks' outbox
(webhooks/) connects to `desk_event` at start-up, and chat never imports it.

Services send it inside the transaction of the write that caused the event: Django's
signals are synchronous, so a receiver's rows (the outbox) commit or roll back with that
write. A receiver must therefore be quick and do no network I/O: it only writes rows.
"""

from django.dispatch import Signal

# Sent with: event (a name from webhooks/events.py EVENTS, or one the desk's channels alone
# listen to: draft.sent, draft.discarded), conversation_id, and the event's objects
# (conversation, message, feedback, agent, call...) as keyword arguments.
desk_event = Signal()


def emit(event: str, *, conversation_id, **objects) -> None:
    """Tell the listeners; call it inside the writing transaction."""
    desk_event.send(sender=event, event=event, conversation_id=conversation_id, **objects)
