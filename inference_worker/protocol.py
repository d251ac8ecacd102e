"""The web↔worker wire protocol: the channel-layer messages between a web process and the
inference workers (documented in docs/protocol.md, "Channel layer: answer run ⇄ inference
worker").

- A web process (chat.answering) sends `inference.request` to the shared inference channel,
  where exactly one worker takes it, and group-sends `inference.cancel` to every worker.
- The worker (inference_worker.worker) answers on the requester's own channel with
  `inference.start`, any number of `inference.delta` / `inference.keepalive`, then exactly one
  `inference.done` or `inference.error`.

The builders below are the only code that makes these messages, so their shape cannot drift
between sender and receiver. Channels routes a message to the handler named after its type
("inference.delta" → `inference_delta`).

Standard library and typing_extensions only: no Django, no Channels, so a worker (or a
benchmark client) speaks the protocol without a configured web project.
"""

from typing import Literal, NotRequired

# pydantic validates these shapes (the worker checks every request); on Python 3.11 it accepts
# only typing_extensions' TypedDict, not typing's.
from typing_extensions import TypedDict


class FunctionCall(TypedDict):
    name: str
    arguments: str  # a JSON object, as text (OpenAI's shape)


class ToolCall(TypedDict):
    """A call the model made, in OpenAI's shape. The worker names a new call "call_" and 24
    hex digits; a call in the history keeps the id its caller got."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatTurn(TypedDict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    # An assistant turn that called functions ("content" may then be empty).
    tool_calls: NotRequired[list[ToolCall]]
    # A tool turn: the result of the call with this id, in "content".
    tool_call_id: NotRequired[str]


class Function(TypedDict):
    """A function offered to the model; `parameters` is a JSON Schema of its arguments (an
    object), `strict` asks that the arguments follow it exactly."""

    name: str
    description: NotRequired[str]
    parameters: NotRequired[dict]
    strict: NotRequired[bool]


class Tool(TypedDict):
    type: Literal["function"]
    function: Function


class FunctionName(TypedDict):
    name: str


class NamedToolChoice(TypedDict):
    type: Literal["function"]
    function: FunctionName


# "auto": the model calls a function or answers; "none": it answers (it is not shown the
# tools); "required": it calls one or more; a named function: it calls that one, once.
ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


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
        found.append(system_content[start + 2 : end if end != -1 else None])
        start = end
    return found


class Guards(TypedDict):
    """What the worker stops while the answer streams (inference_worker.textguards): a loop
    (`loops`), and an answer longer than `max_words` words or `max_han` Chinese characters
    (0: no such limit). The text is then cut back to a sentence boundary and `inference.done`
    carries it as `text`."""

    loops: bool
    max_words: int
    max_han: int


# --- Web process → workers --------------------------------------------------------------------


class InferenceRequest(TypedDict):
    """Sent by a consumer to the shared inference channel; exactly one worker takes it."""

    type: Literal["inference.request"]
    request_id: str
    reply_channel: str
    # System prompt first, then the turns oldest first, the newest customer message last (or,
    # with tools, the assistant's calls and the tools' results after it). The worker trims the
    # oldest turns to the token budget, never the first or the last.
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
    guards: NotRequired[Guards]
    # Functions the model may call, and whether it must (docs/protocol.md). Without `tools`
    # the prompt is the same as ever.
    tools: NotRequired[list[Tool]]
    tool_choice: NotRequired[ToolChoice]
    # False: at most one call (the first is kept).
    parallel_tool_calls: NotRequired[bool]


class InferenceCancel(TypedDict):
    """Group-sent to every worker: whichever holds the request aborts it at the engine."""

    type: Literal["inference.cancel"]
    request_id: str
    reason: str


def inference_request(
    *,
    request_id: str,
    reply_channel: str,
    messages: list[ChatTurn],
    sampling: Sampling,
    deadline: float,
    queued_at: float,
    start_by: float,
    grounding: Grounding | None = None,
    guards: Guards | None = None,
    tools: list[Tool] | None = None,
    tool_choice: ToolChoice | None = None,
    parallel_tool_calls: bool | None = None,
) -> InferenceRequest:
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
    if guards:
        request["guards"] = guards
    if tools:
        request["tools"] = tools
    if tool_choice is not None:
        request["tool_choice"] = tool_choice
    if parallel_tool_calls is not None:
        request["parallel_tool_calls"] = parallel_tool_calls
    return request


def inference_cancel(*, request_id: str, reason: str) -> InferenceCancel:
    return {"type": "inference.cancel", "request_id": request_id, "reason": reason}


# --- Worker → web process ---------------------------------------------------------------------
#
# On the consumer's own channel. Every request gets `start`, any number of `delta` (and
# `keepalive`), then exactly one `done` or `error` (unless it was cancelled: then nothing
# more). While a request runs, the worker sends something at least every KEEPALIVE_SECONDS,
# so the consumer can tell a slow answer from a dead worker.


def inference_start(
    *, request_id: str, worker: str, model: str, trimmed: int = 0, passages: int = 0
) -> dict:
    # trimmed / passages: as in inference.done, known from the start (a partial answer's stored
    # prompt is then exact too).
    return {
        "type": "inference.start",
        "request_id": request_id,
        "worker": worker,
        "model": model,
        "trimmed": trimmed,
        "passages": passages,
    }


def inference_delta(*, request_id: str, text: str) -> dict:
    # text "": the answer has begun, but its output is held until it is clear whether it is a
    # tool call (the first token came; nothing to show yet).
    return {"type": "inference.delta", "request_id": request_id, "text": text}


def inference_done(
    *,
    request_id: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    ttft_ms: int | None,
    total_ms: int,
    trimmed: int = 0,
    passages: int = 0,
    text: str | None = None,
    tool_calls: list[ToolCall] | None = None,
    invalid_tool_call: str | None = None,
) -> dict:
    # trimmed: the oldest turns left out of the prompt to fit the token budget; passages: the
    # request's grounding passages the prompt held; text: the whole answer as it stands, when
    # it differs from what the deltas streamed (a guard cut it back: finish_reason
    # "repetition" or "length"; or held output that was no valid tool call). tool_calls: the
    # model's calls (finish_reason "tool_calls"); invalid_tool_call: why output written as a
    # tool call was none (InvalidToolCall), its text then in `text`.
    done = {
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
    if text is not None:
        done["text"] = text
    if tool_calls:
        done["tool_calls"] = tool_calls
    if invalid_tool_call is not None:
        done["invalid_tool_call"] = invalid_tool_call
    return done


# inference.done's finish_reason when the answer is one or more calls of the offered functions.
TOOL_CALLS = "tool_calls"


class InvalidToolCall:
    """Why output the model wrote as a tool call is not one (`invalid_tool_call`)."""

    MALFORMED = "malformed"  # not a JSON object with a "name" and "arguments", or cut off
    UNKNOWN_FUNCTION = "unknown_function"  # names a function that was not offered
    ARGUMENTS_NOT_OBJECT = "arguments_not_object"  # arguments that are not a JSON object


def inference_keepalive(*, request_id: str) -> dict:
    """The request is still running (prefill, or a pause in the stream): nothing to show."""
    return {"type": "inference.keepalive", "request_id": request_id}


def inference_error(*, request_id: str, code: str, message: str) -> dict:
    return {"type": "inference.error", "request_id": request_id, "code": code, "message": message}


class InferenceErrorCode:
    BAD_REQUEST = "bad_request"  # malformed request: a bug or a hostile sender, never retried
    CONTEXT_OVERFLOW = "context_overflow"  # the newest message alone exceeds the budget
    EXPIRED = "expired"  # the deadline passed while the request waited in the queue
    ENGINE = "engine_error"
    # The consumer's channel stayed full (its process is overloaded): the answer was aborted.
    OVERLOADED = "overloaded"
