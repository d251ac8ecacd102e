"""What a kind's sender is given and may raise (connectors/kinds.py `Kind.send`)."""

from dataclasses import dataclass

from chat.models import Conversation, Inbox, Message


@dataclass(frozen=True)
class Thread:
    """Where a message goes in the customer's thread (e-mail: subject, In-Reply-To and
    References; other channels may ignore it)."""

    subject: str
    in_reply_to: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class Outgoing:
    """An outbox row a process holds, with everything needed to send it and nothing to look
    up: `inbox` comes with its site."""

    pk: int
    inbox: Inbox
    conversation: Conversation
    message: Message
    external_id: str  # chosen when the row was written ("" where the channel gives one)
    thread: Thread


class SendFailed(Exception):
    """The channel did not take the message; the text says why (no secret in it): the row is
    tried again after a backoff."""
