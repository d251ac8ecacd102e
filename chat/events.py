"""Every event shape of the desk, in one place (documented in docs/protocol.md).

Three families:
- frames the customer's browser sends and receives on /ws/chat/;
- channel-layer events between a chat consumer and an inference worker;
- the constructors below, which are the only code that builds outgoing frames, so a frame's
  shape cannot drift between the places that send it.

Channels routes a channel-layer event to the handler named after its type: an event of type
"inference.delta" is handled by the consumer method `inference_delta`.
"""

from typing import (
    Annotated,
    Literal,
    NotRequired,  # pydantic needs these on Python 3.11
)

from pydantic import Field, TypeAdapter
from typing_extensions import TypedDict

# --- Customer WebSocket: client → server ----------------------------------------------------


class MessageFrame(TypedDict):
    type: Literal["message"]
    text: str
    # The browser's own id for the message: a resend with the same id is stored once.
    client_id: NotRequired[str]


class PingFrame(TypedDict):
    type: Literal["ping"]


class FeedbackFrame(TypedDict):
    """Thumbs up or down on one bot answer; sending again replaces the rating."""

    type: Literal["feedback"]
    message_id: int
    rating: Literal["up", "down"]
    comment: NotRequired[str]


class CsatFrame(TypedDict):
    """Satisfaction with the whole conversation, 1 (bad) to 5 (great)."""

    type: Literal["csat"]
    score: int
    comment: NotRequired[str]


class HandoffRequestFrame(TypedDict):
    type: Literal["handoff.request"]


class CloseFrame(TypedDict):
    type: Literal["close"]


class TypingFrame(TypedDict):
    """The customer is typing (send at most every few seconds); shown to the agent."""

    type: Literal["typing"]


class ContactFrame(TypedDict):
    """How to reach the customer when no agent can answer now."""

    type: Literal["contact"]
    email: str
    name: NotRequired[str]


ClientFrame = Annotated[
    MessageFrame | PingFrame | FeedbackFrame | CsatFrame | HandoffRequestFrame | CloseFrame
    | TypingFrame | ContactFrame,
    Field(discriminator="type"),
]
client_frame_adapter: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
CLIENT_FRAME_TYPES = ("message", "ping", "feedback", "csat", "handoff.request", "close",
                      "typing", "contact")
MAX_COMMENT_CHARS = 1000


# --- Customer WebSocket: server → client ----------------------------------------------------


class HistoryItem(TypedDict):
    id: int
    role: str
    text: str
    created_at: str
    client_id: str | None
    partial: bool
    rating: str | None  # the customer's thumbs on a bot answer: "up", "down" or None
    agent_name: str  # who wrote an agent message ("" for other roles)


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int


def conversation_frame(*, conversation_id: str, token: str | None, status: str,
                       resumed: bool) -> dict:
    frame = {"type": "conversation", "id": conversation_id, "status": status, "resumed": resumed}
    if token is not None:
        frame["token"] = token
    return frame


def history_frame(*, messages: list[HistoryItem]) -> dict:
    return {"type": "history", "messages": messages}


def ack_frame(*, client_id: str | None, message_id: int, duplicate: bool) -> dict:
    return {"type": "message.ack", "client_id": client_id, "id": message_id, "duplicate": duplicate}


def bot_start_frame(*, message_id: int, reply_to: int | None = None) -> dict:
    # reply_to: the customer message answered (the newest one when several came together).
    return {"type": "bot.start", "message_id": message_id, "reply_to": reply_to}


def bot_delta_frame(*, message_id: int, text: str) -> dict:
    return {"type": "bot.delta", "message_id": message_id, "text": text}


def bot_done_frame(*, message_id: int, usage: Usage, ttft_ms: int | None, total_ms: int,
                   finish_reason: str, fallback: bool, partial: bool,
                   sources: list[dict] | None = None) -> dict:
    # sources: the help-centre articles the answer was grounded in, [{article_id, title, url}].
    return {
        "type": "bot.done",
        "message_id": message_id,
        "usage": usage,
        "ttft_ms": ttft_ms,
        "total_ms": total_ms,
        "finish_reason": finish_reason,
        "fallback": fallback,
        "partial": partial,
        "sources": sources or [],
    }


def error_frame(*, code: str, message: str, client_id: str | None = None,
                retry_after: int | None = None) -> dict:
    """`client_id` names the refused message, when a message was refused: its sender can
    stop resending it. `retry_after`: seconds until a limit lets the same action through."""
    frame = {"type": "error", "code": code, "message": message}
    if client_id is not None:
        frame["client_id"] = client_id
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame


def pong_frame() -> dict:
    return {"type": "pong"}


def feedback_ack_frame(*, message_id: int, rating: str) -> dict:
    return {"type": "feedback.ack", "message_id": message_id, "rating": rating}


def csat_ack_frame(*, score: int) -> dict:
    return {"type": "csat.ack", "score": score}


def handoff_ack_frame(*, agents_available: bool = True, ask_contact: bool = False,
                      business_hours: dict | None = None, business_hours_text: str = "") -> dict:
    """The hand-off was recorded. `agents_available` is false when no agent is online or it
    is outside business hours; then `ask_contact` asks for an e-mail address to follow up.
    `business_hours_text` (agents.hours.away_text), only outside business hours: the hours as
    the widget shows them, formatted in the site's time zone and the conversation's language."""
    frame = {"type": "handoff.ack", "status": "requested", "agents_available": agents_available,
             "ask_contact": ask_contact, "business_hours": business_hours or {}}
    if business_hours_text:
        frame["business_hours_text"] = business_hours_text
    return frame


def contact_ack_frame() -> dict:
    return {"type": "contact.ack"}


def agent_joined_frame(*, agent_name: str) -> dict:
    return {"type": "agent.joined", "agent_name": agent_name}


def agent_left_frame() -> dict:
    """The agent handed the conversation back to the bot."""
    return {"type": "agent.left"}


def agent_message_frame(*, message_id: int, text: str, agent_name: str) -> dict:
    return {"type": "agent.message", "id": message_id, "text": text, "agent_name": agent_name}


def agent_typing_frame(*, agent_name: str) -> dict:
    return {"type": "agent.typing", "agent_name": agent_name}


def conversation_closed_frame() -> dict:
    return {"type": "conversation.closed"}


# Error codes a customer socket can receive (docs/protocol.md explains each).
class ErrorCode:
    BAD_FRAME = "bad_frame"  # not JSON, binary, not an object, or fields of the wrong type
    UNKNOWN_TYPE = "unknown_type"
    EMPTY_MESSAGE = "empty_message"
    MESSAGE_TOO_LONG = "message_too_long"
    FRAME_TOO_LARGE = "frame_too_large"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "conversation_not_found"  # unknown id or wrong token: deliberately the same
    CLOSED = "conversation_closed"
    UNKNOWN_MESSAGE = "unknown_message"  # feedback on a message that is no bot answer here
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"  # unknown site key, or a page it does not allow
    # Console socket only:
    FORBIDDEN = "forbidden"  # not logged in as active staff: the socket is closed (4403)
    NOT_HOLDER = "not_holder"  # typing in a conversation someone else (or the bot) answers
    UNAVAILABLE = "unavailable"  # storage failed; nothing was stored, the customer may resend
    INTERNAL = "internal_error"  # a bug on the server: the socket stays open, nothing changed


# --- Channel layer: consumer ⇄ inference worker ----------------------------------------------


class ChatTurn(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


class Sampling(TypedDict):
    temperature: float
    top_p: float
    max_tokens: int
    frequency_penalty: float


class Grounding(TypedDict):
    """Help-centre passages for the answer, best first, and the rule to answer from them. The
    worker adds to the system prompt as many as the token budget holds beside the newest
    message (before older turns: they are cut first), and says how many in `passages`."""

    instruction: str
    passages: list[str]


def grounded_system(system_prompt: str, grounding: Grounding | None, kept: int) -> str:
    """The system prompt with the first `kept` passages: what the model sees."""
    if not grounding or kept <= 0:
        return system_prompt
    passages = "\n\n".join(grounding["passages"][:kept])
    return f"{system_prompt}\n\n{grounding['instruction']}\n\n{passages}"


def passages_in(system_content: str) -> list[str]:
    """The passages a grounded system prompt holds ("[1] Title > Heading\n…", in order), for
    people reviewing an answer."""
    found, number, start = [], 1, system_content.find("\n\n[1] ")
    while start != -1:
        number += 1
        end = system_content.find(f"\n\n[{number}] ", start + 2)
        found.append(system_content[start + 2: end if end != -1 else None])
        start = end
    return found


class InferenceRequest(TypedDict):
    """Sent by a consumer to the shared inference channel; exactly one worker takes it."""

    type: Literal["inference.request"]
    request_id: str
    reply_channel: str
    # System prompt first, then the turns oldest first, the newest customer message last.
    # The worker trims the oldest turns to the token budget, never the first or the last.
    messages: list[ChatTurn]
    sampling: Sampling
    # Unix time after which nobody waits for this answer any more: a worker that takes the
    # request later drops it instead of spending the engine on it.
    deadline: float
    # Unix time the consumer sent it: the worker measures the queue wait from it.
    queued_at: float
    # Unix time by which the answer must have started: past it the consumer has answered with
    # the fallback already, so a worker that takes the request later drops it (`expired`).
    start_by: float
    grounding: NotRequired[Grounding]


class InferenceCancel(TypedDict):
    """Group-sent to every worker: whichever holds the request aborts it at the engine."""

    type: Literal["inference.cancel"]
    request_id: str
    reason: str


def inference_request(*, request_id: str, reply_channel: str, messages: list[ChatTurn],
                      sampling: Sampling, deadline: float, queued_at: float,
                      start_by: float, grounding: Grounding | None = None) -> InferenceRequest:
    request: InferenceRequest = {
        "type": "inference.request",
        "request_id": request_id,
        "reply_channel": reply_channel,
        "messages": messages,
        "sampling": sampling,
        "deadline": deadline,
        "queued_at": queued_at,
        "start_by": start_by,
    }
    if grounding:
        request["grounding"] = grounding
    return request


def inference_cancel(*, request_id: str, reason: str) -> InferenceCancel:
    return {"type": "inference.cancel", "request_id": request_id, "reason": reason}


# Worker → consumer, on the consumer's own channel. Every request gets `start`, any number of
# `delta` (and `keepalive`), then exactly one `done` or `error` (unless it was cancelled: then
# nothing more). While a request runs, the worker sends something at least every
# KEEPALIVE_SECONDS, so the consumer can tell a slow answer from a dead worker.


def inference_start(*, request_id: str, worker: str, model: str, trimmed: int = 0,
                    passages: int = 0) -> dict:
    # trimmed / passages: as in inference.done, known from the start (a partial answer's stored
    # prompt is then exact too).
    return {"type": "inference.start", "request_id": request_id, "worker": worker,
            "model": model, "trimmed": trimmed, "passages": passages}


def inference_delta(*, request_id: str, text: str) -> dict:
    return {"type": "inference.delta", "request_id": request_id, "text": text}


def inference_done(*, request_id: str, finish_reason: str, prompt_tokens: int,
                   completion_tokens: int, ttft_ms: int | None, total_ms: int,
                   trimmed: int = 0, passages: int = 0) -> dict:
    # trimmed: the oldest turns left out of the prompt to fit the token budget; passages: the
    # request's grounding passages the prompt held.
    return {
        "type": "inference.done",
        "request_id": request_id,
        "finish_reason": finish_reason,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "ttft_ms": ttft_ms,
        "total_ms": total_ms,
        "trimmed": trimmed,
        "passages": passages,
    }


def inference_keepalive(*, request_id: str) -> dict:
    """The request is still running (prefill, or a pause in the stream): nothing to show."""
    return {"type": "inference.keepalive", "request_id": request_id}


def inference_error(*, request_id: str, code: str, message: str) -> dict:
    return {"type": "inference.error", "request_id": request_id, "code": code, "message": message}


# --- Channel layer: conversation and console groups --------------------------------------------
#
# Produced by services after their transaction commits (see agents.broadcast):
# - group `conversation.<id>`: the customer sockets of one conversation;
# - group `watch.<id>`: the console sockets showing that conversation (staff only);
# - group `console`: every console socket (inbox changes, hand-off alerts, tickets).


def conversation_group(conversation_id) -> str:
    return f"conversation.{conversation_id}"


def watch_group(conversation_id) -> str:
    return f"watch.{conversation_id}"


CONSOLE_GROUP = "console"


def conv_status(*, conversation_id: str, status: str, agent_name: str = "") -> dict:
    """The conversation's mode changed: bot, waiting, human (agent_name holds it), closed."""
    return {"type": "conv.status", "conversation_id": conversation_id, "status": status,
            "agent_name": agent_name}


def conv_message(*, conversation_id: str, message_id: int, role: str, text: str,
                 author_name: str = "") -> dict:
    """A stored message: agent replies reach the customer; watchers see every role."""
    return {"type": "conv.message", "conversation_id": conversation_id, "id": message_id,
            "role": role, "text": text, "author_name": author_name}


def conv_typing(*, conversation_id: str, who: str, name: str = "") -> dict:
    return {"type": "conv.typing", "conversation_id": conversation_id, "who": who, "name": name}


def conv_bot(*, conversation_id: str, frame: dict) -> dict:
    """A bot.start / bot.delta / bot.done frame, mirrored to watchers as the customer sees it."""
    return {"type": "conv.bot", "conversation_id": conversation_id, "frame": frame}


def console_update(*, conversation_id: str, reason: str) -> dict:
    """Something in the inbox changed for this conversation (new, message, status)."""
    return {"type": "console.update", "conversation_id": conversation_id, "reason": reason}


def console_handoff(*, conversation_id: str, subject: str) -> dict:
    """A customer asked for a human: alert every online agent."""
    return {"type": "console.handoff", "conversation_id": conversation_id, "subject": subject}


def console_ticket(*, ticket_id: int, reason: str) -> dict:
    return {"type": "console.ticket", "ticket_id": ticket_id, "reason": reason}


# --- Channel layer: an answer and the sockets that show it (chat.answering) -------------------


def customer_frame_for(event: dict) -> dict | None:
    """What the customer is told of a conversation-group event (on the socket, or on the
    API's event stream), or None: agents' news for the customer, nothing of the console's."""
    kind = event["type"]
    if kind == "conv.status":
        return {
            "human": lambda: agent_joined_frame(agent_name=event["agent_name"]),
            "bot": agent_left_frame,
            "closed": conversation_closed_frame,
        }.get(event["status"], lambda: None)()
    if kind == "conv.message" and event["role"] == "agent":
        return agent_message_frame(message_id=event["id"], text=event["text"],
                                   agent_name=event["author_name"])
    if kind == "conv.typing" and event["who"] == "agent":
        return agent_typing_frame(agent_name=event["name"])
    return None


def answer_started(*, conversation_id: str, channel: str) -> dict:
    """To the conversation's and its watchers' groups: an answer began; `channel` is the run
    that streams it. Sockets that did not ask for it join its audience."""
    return {"type": "answer.started", "conversation_id": conversation_id, "channel": channel}


def answer_join(*, channel: str, kind: str, message_id: int | None = None) -> dict:
    """To a run: add this socket ("customer" or "console") to the audience; it gets the text
    so far at once. `message_id`: the answer this socket left out of its history because it
    was streaming; should it have ended meanwhile, the socket gets it whole."""
    return {"type": "answer.join", "channel": channel, "kind": kind, "message_id": message_id}


def answer_leave(*, channel: str, now: bool = False) -> dict:
    """To a run: this socket is gone. `now`: and it will not come back (an HTTP client that
    disconnected): with no customer left, the answer stops without the reload grace period."""
    return {"type": "answer.leave", "channel": channel, "now": now}


def answer_frame(*, frame: dict) -> dict:
    """A bot.start / bot.delta / bot.done frame for a customer socket of another process."""
    return {"type": "answer.frame", "frame": frame}


class InferenceErrorCode:
    BAD_REQUEST = "bad_request"  # malformed request: a bug or a hostile sender, never retried
    CONTEXT_OVERFLOW = "context_overflow"  # the newest message alone exceeds the budget
    EXPIRED = "expired"  # the deadline passed while the request waited in the queue
    ENGINE = "engine_error"
    # The consumer's channel stayed full (its process is overloaded): the answer was aborted.
    OVERLOADED = "overloaded"
