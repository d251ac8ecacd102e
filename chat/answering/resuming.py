"""A socket that resumes while another process's run holds the conversation's claim.

It joins that run, which sends the text so far and then the rest. But a process killed outright
(SIGKILL, the OOM killer) leaves its claims behind until they run out (ANSWER_CLAIM_TTL_SECONDS),
and a run that is gone sends nothing: the customer would wait for an answer that never comes.
So the resume also watches the claim (claims.owner_gone): renewed, the run lives and nothing more
is done; run out unrenewed, the run is gone, and the resume takes over. The answer it was
streaming is closed as `interrupted` with the text its last partial save kept (shown to the
socket, as history would show it), and a question still owed is answered now, claimed like any
question: however many tabs resume, one of them answers it, once.
"""

import contextlib

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from chat import frames, metrics, services
from chat.answering.audience import CUSTOMER, deliver
from runtime.aio import db

INTERRUPTED = "interrupted"


async def close_dead_answer(conversation_id, message_id: int | None, channel_name: str) -> None:
    """Close the answer the gone run was streaming, and show the socket what was kept of it
    (its history left that answer out while it was under way)."""
    if message_id is None:
        return
    message = await db(services.bot_message_abandon)(message_id=message_id)
    if message is None:  # stored after all (its run ended), or closed by another tab
        return
    metrics.answer_ended(metrics.CANCELLED, "shutdown")
    if not message.text:
        return
    shown = [
        frames.bot_start_frame(message_id=message.pk),
        frames.bot_delta_frame(message_id=message.pk, text=message.text),
        frames.bot_done_frame(
            message_id=message.pk,
            usage={"prompt_tokens": 0, "completion_tokens": 0},
            ttft_ms=None,
            total_ms=0,
            finish_reason=INTERRUPTED,
            fallback=False,
            partial=True,
        ),
    ]
    layer = get_channel_layer()
    with contextlib.suppress(ChannelFull, RedisError, OSError):
        for frame in shown:
            await deliver(layer, channel_name, CUSTOMER, str(conversation_id), frame)
