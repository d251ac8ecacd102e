"""Server-Sent Events as the desk's streams write them: the chat API's answers and session
events, the OpenAI-compatible stream's chunks, and the staff playground's answers."""

import json
from collections.abc import AsyncIterator

from chat import frames, turns
from chat.api.listening import AnswerListener
from chat.models import Conversation

# One Server-Sent Event, as OpenAPI describes a text/event-stream body: its `data` is one frame
# of docs/protocol.md as JSON (OpenAI's chunks, on /v1/).
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}
SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}


def sse(frame: dict) -> bytes:
    """One Server-Sent Event: its name is the frame's type, its data the frame itself."""
    return f"event: {frame['type']}\ndata: {json.dumps(frame, ensure_ascii=False)}\n\n".encode()


async def turn_stream(
    listener: AnswerListener, conversation: Conversation, turn: turns.Turn, *, on_done=None
) -> AsyncIterator[bytes]:
    """A customer's turn as Server-Sent Events: ack, then the answer's frames as the socket
    gets them; or, when the bot does not answer, a `status` event saying who holds the
    conversation. `on_done(frame)` is awaited before bot.done goes out. A client that goes
    away ends this generator (Django cancels it), and leaving stops the answer in the engine.
    (The playground streams its answers with it too.)"""
    try:
        yield sse(
            frames.ack_frame(
                client_id=turn.message.client_id,
                message_id=turn.message.pk,
                duplicate=turn.outcome == turns.Outcome.DUPLICATE,
            )
        )
        if turn.outcome != turns.Outcome.ANSWERING:
            status = (
                Conversation.Status.WAITING
                if turn.outcome == turns.Outcome.HANDOFF
                else conversation.status
            )
            yield sse({"type": "status", "status": status})
            return
        async for frame in listener.answer(turn.message.pk):
            if frame["type"] == "bot.done" and on_done is not None:
                await on_done(frame)
            yield sse(frame)
    finally:
        await listener.close()
