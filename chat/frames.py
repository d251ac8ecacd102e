"""The customer's WebSocket, /ws/chat/: every frame a browser sends (the schemas, validated by
chat.protocol) and every frame it receives (the builders, the only code that makes them), with
the error codes (documented in docs/protocol.md, "Customer socket: `/ws/chat/`").

The console socket (agents.consumers) sends the same `error` and `pong` frames. A new customer
frame type takes one schema in `ClientFrame`, one handler in chat.consumers (named after the
type: "handoff.request" → `_on_handoff_request`) and its line in docs/protocol.md.
"""

from typing import (
    Annotated,
    Literal,
    NotRequired,  # pydantic needs these on Python 3.11
    get_args,
    get_type_hints,
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


class CustomerTokenFrame(TypedDict):
    """A fresh token from the company's back end for the verified customer (the page hands it
    to the widget before the last one expires: docs/verified-customers.md)."""

    type: Literal["customer.token"]
    token: str


class ActionConfirmFrame(TypedDict):
    """The customer confirms an action that changes something (an `action` frame with status
    `confirm_required`): it is called, once, however often this arrives."""

    type: Literal["action.confirm"]
    call_id: int


class ActionCancelFrame(TypedDict):
    type: Literal["action.cancel"]
    call_id: int


ClientFrame = Annotated[
    MessageFrame
    | PingFrame
    | FeedbackFrame
    | CsatFrame
    | HandoffRequestFrame
    | CloseFrame
    | TypingFrame
    | ContactFrame
    | CustomerTokenFrame
    | ActionConfirmFrame
    | ActionCancelFrame,
    Field(discriminator="type"),
]
client_frame_adapter: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


def _frame_types(frame_union) -> tuple[str, ...]:
    """The `type` of each schema in an Annotated[A | B | …, Field(discriminator="type")], in
    the order they are listed: read from the schemas, so no list kept by hand can miss one."""
    schemas = get_args(get_args(frame_union)[0])
    return tuple(type_ for schema in schemas for type_ in get_args(get_type_hints(schema)["type"]))


# What chat.protocol accepts, and names in its "unknown type" error.
CLIENT_FRAME_TYPES = _frame_types(ClientFrame)
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
    calls: NotRequired[list[dict]]  # a bot answer's calls of the company's back end (`action`)


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int


def conversation_frame(
    *, conversation_id: str, token: str | None, status: str, resumed: bool
) -> dict:
    frame = {"type": "conversation", "id": conversation_id, "status": status, "resumed": resumed}
    if token is not None:
        frame["token"] = token
    return frame


def history_frame(*, messages: list[HistoryItem]) -> dict:
    return {"type": "history", "messages": messages}


def ack_frame(*, client_id: str | None, message_id: int, duplicate: bool) -> dict:
    return {"type": "message.ack", "client_id": client_id, "id": message_id, "duplicate": duplicate}


def bot_start_frame(*, message_id: int, reply_to: int | None = None, replace: bool = False) -> dict:
    # reply_to: the customer message answered (the newest one when several came together).
    # replace: a guard changed the answer already shown (cut back to a sentence, asked again,
    # replaced): what this message showed is dropped, and the deltas that follow are all of it.
    frame = {"type": "bot.start", "message_id": message_id, "reply_to": reply_to}
    if replace:
        frame["replace"] = True
    return frame


def bot_delta_frame(*, message_id: int, text: str) -> dict:
    return {"type": "bot.delta", "message_id": message_id, "text": text}


def bot_done_frame(
    *,
    message_id: int,
    usage: Usage,
    ttft_ms: int | None,
    total_ms: int,
    finish_reason: str,
    fallback: bool,
    partial: bool,
    sources: list[dict] | None = None,
    guards: tuple[str, ...] = (),
    offer_human: bool = False,
    tool_calls: list[dict] | None = None,
) -> dict:
    # sources: the help-centre articles the answer was grounded in, [{article_id, title, url}].
    # guards: the product's guards that shaped it (chat/guards.py); offer_human: the answer
    # offers a human agent (the widget shows its "talk to a human" button); tool_calls: the
    # functions the model called, in OpenAI's shape (only where a caller offered functions:
    # the OpenAI-compatible API).
    frame = {
        "type": "bot.done",
        "message_id": message_id,
        "usage": usage,
        "ttft_ms": ttft_ms,
        "total_ms": total_ms,
        "finish_reason": finish_reason,
        "fallback": fallback,
        "partial": partial,
        "sources": sources or [],
        "guards": list(guards),
        "offer_human": offer_human,
    }
    if tool_calls:
        frame["tool_calls"] = tool_calls
    return frame


def error_frame(
    *, code: str, message: str, client_id: str | None = None, retry_after: int | None = None
) -> dict:
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


def handoff_ack_frame(
    *,
    agents_available: bool = True,
    ask_contact: bool = False,
    business_hours: dict | None = None,
    business_hours_text: str = "",
) -> dict:
    """The hand-off was recorded. `agents_available` is false when no agent is online or it
    is outside business hours; then `ask_contact` asks for an e-mail address to follow up.
    `business_hours_text` (chat.hours.away_text), only outside business hours: the hours as
    the widget shows them, formatted in the site's time zone and the conversation's language."""
    frame = {
        "type": "handoff.ack",
        "status": "requested",
        "agents_available": agents_available,
        "ask_contact": ask_contact,
        "business_hours": business_hours or {},
    }
    if business_hours_text:
        frame["business_hours_text"] = business_hours_text
    return frame


def contact_ack_frame() -> dict:
    return {"type": "contact.ack"}


def customer_verified_frame(*, customer_id: str, expires_at: str) -> dict:
    """A customer token was accepted: the conversation is this customer's, verified until
    `expires_at` (ISO 8601)."""
    return {"type": "customer.verified", "customer_id": customer_id, "expires_at": expires_at}


def action_frame(
    *,
    call_id: int,
    name: str,
    label: str,
    status: str,
    text: str,
    fields: dict,
    arguments: dict,
    latency_ms: int | None,
    confirm_text: str = "",
) -> dict:
    """A call of the company's back end for this conversation (chat/actions): sent before the
    answer that uses it, and again with the same call_id when its status changes
    (confirm_required → confirmed → ok or a failure; or cancelled)."""
    return {
        "type": "action",
        "call_id": call_id,
        "name": name,
        "label": label,
        "status": status,
        "text": text,
        "fields": fields,
        "arguments": arguments,
        "latency_ms": latency_ms,
        "confirm_text": confirm_text,
    }


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
    # A customer token that verifies no one (malformed, wrongly signed, too large, or the site
    # has no identity secret), or one that has expired: the conversation goes on unverified.
    CUSTOMER_TOKEN_INVALID = "customer_token_invalid"
    CUSTOMER_TOKEN_EXPIRED = "customer_token_expired"
    CUSTOMER_MISMATCH = "customer_mismatch"  # a token for another customer than the verified one
    UNKNOWN_ACTION_CALL = "unknown_action_call"  # confirm or cancel of no call of this conversation
    # Console socket only:
    FORBIDDEN = "forbidden"  # not logged in as active staff: the socket is closed (4403)
    NOT_HOLDER = "not_holder"  # typing in a conversation someone else (or the bot) answers
    UNAVAILABLE = "unavailable"  # storage failed; nothing was stored, the customer may resend
    INTERNAL = "internal_error"  # a bug on the server: the socket stays open, nothing changed
