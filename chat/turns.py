"""A customer's message, on any channel (the widget's socket, the chat API, the OpenAI-style
API): store it once, then let the bot answer, put the conversation in the queue for a human,
or stay silent because a human holds it. One function, so every channel behaves the same."""

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chat import answering, memory, selectors, services
from chat.answering import AnswerOptions
from chat.answering.prompt import AnswerContext, read_answer_context
from chat.handoff import HandoffOutcome, handoff_request
from chat.models import Conversation, Message
from runtime.aio import db


class Outcome(enum.StrEnum):
    ANSWERING = "answering"  # the bot answers (its frames reach `channel_name`)
    HANDOFF = "handoff"  # the customer asked for a human: waiting for one
    SILENT = "silent"  # waiting for, or talking with, a human: the bot stays silent
    DUPLICATE = "duplicate"  # this client_id was stored before: nothing more happens


@dataclass(frozen=True)
class Turn:
    message: Message
    outcome: Outcome
    handoff: HandoffOutcome | None = None


async def customer_says(
    *,
    conversation: Conversation,
    text: str,
    client_id: str | None,
    channel_name: str,
    options: AnswerOptions | None = None,
    on_stored: Callable[[Message, bool], Awaitable[None]] | None = None,
    metadata: dict | None = None,
) -> Turn:
    """Raises services.ConversationClosed (also should the conversation close while a
    hand-off is asked for). `on_stored` runs once the message is stored and before anything
    answers it (the socket acks it there). A conversation not stored yet (prepared when its
    socket connected) is stored with the message: the message's `conversation` is the
    stored one. `metadata`: what the channel said about the message beyond its text."""
    # One trip to a database thread, not two or three: under a burst of customers each hop
    # waits in the executor's queue behind every other socket's, so further hops (storing the
    # conversation, asks_for_human, and the answer's own reads before its request leaves)
    # made answers start late and then all at once.
    answering_here = answering.answers_here(conversation.pk)
    conversation, message, created, wants_human, context = await db(_store_customer_message)(
        conversation, text, client_id, options, read_context=not answering_here, metadata=metadata
    )
    if on_stored is not None:
        await on_stored(message, created)
    if not created:
        return Turn(message, Outcome.DUPLICATE)
    await memory.remember(message)
    if conversation.status != Conversation.Status.BOT:
        return Turn(message, Outcome.SILENT)
    if wants_human:
        outcome = await db(handoff_request)(conversation=conversation)
        return Turn(message, Outcome.HANDOFF, outcome)
    await answering.request_answer(
        conversation=conversation,
        question=message,
        channel_name=channel_name,
        options=options,
        context=context,
    )
    return Turn(message, Outcome.ANSWERING)


def _store_customer_message(
    conversation: Conversation,
    text: str,
    client_id: str | None,
    options: AnswerOptions | None,
    *,
    read_context: bool,
    metadata: dict | None = None,
) -> tuple[Conversation, Message, bool, bool, AnswerContext | None]:
    """services.message_add_customer (after services.conversation_open for a conversation
    not stored yet), whether a new message asks for a human while the bot holds the
    conversation (the only case in which customer_says asks), and, when the bot is to answer
    it and `read_context`, what its answer reads before the request leaves."""
    if conversation._state.adding:
        conversation, _ = services.conversation_open(conversation=conversation)
    message, created = services.message_add_customer(
        conversation=conversation, text=text, client_id=client_id, metadata=metadata
    )
    message.conversation = conversation  # a resend's row comes without it; on_stored reads it
    wants_human = (
        created
        and conversation.status == Conversation.Status.BOT
        and selectors.asks_for_human(message)
    )
    context = None
    if read_context and created and conversation.status == Conversation.Status.BOT:
        if not wants_human:
            context = read_answer_context(conversation, options)
    return conversation, message, created, wants_human, context
