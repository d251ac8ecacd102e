"""A customer's message that came in through a channel, said in the desk: through chat.turns,
the entry of every channel, so the bot answers it (or an agent does) as on the widget. The
answer's own run stores what the bot says; its `message.bot` event queues what goes back."""

import asyncio

from chat import services as chat_services
from chat import turns
from chat.api.listening import AnswerListener
from connectors import services
from runtime.aio import db


async def say(
    intake: services.Intake,
    *,
    text: str,
    client_id: str,
    metadata: dict,
    answers: set[asyncio.Task],
) -> str:
    """Store the message of `intake` (whose conversation is set) as the customer's; "taken",
    or "closed" when the conversation closed meanwhile (the log row says so). An answer the
    bot gives runs on as a task added to `answers`."""
    listener = await AnswerListener(intake.conversation).open()
    try:
        turn = await turns.customer_says(
            conversation=intake.conversation,
            text=text,
            client_id=client_id,
            channel_name=listener.channel_name,
            metadata=metadata,
        )
    except chat_services.ConversationClosed:
        await listener.close()
        await db(services.inbound_refused)(inbound_id=intake.inbound.pk, reason="closed")
        return "closed"
    except BaseException:
        await listener.close()
        raise
    await db(services.inbound_taken)(inbound_id=intake.inbound.pk, message_id=turn.message.pk)
    if turn.outcome == turns.Outcome.ANSWERING:
        task = asyncio.create_task(_hear_answer(listener, turn.message.pk))
        answers.add(task)
        task.add_done_callback(answers.discard)
    else:
        await listener.close()
    return "taken"


async def _hear_answer(listener: AnswerListener, question_id: int) -> None:
    """Stay in the answer's audience until it ends, as an API request does: a run with no
    one listening would stop early."""
    try:
        async for _frame in listener.answer(question_id):
            pass
    finally:
        await listener.close()
