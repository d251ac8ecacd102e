"""An OpenAI-compatible chat API, /v1/: `POST /v1/chat/completions` and `GET /v1/models`.

The official clients work unchanged with `base_url=<desk>/v1` and a desk API key with the
`openai` scope. Like OpenAI's, a call is stateless (the `messages` array is the history), but
each is stored as a conversation on the `openai` channel so staff can review it, and the answer
comes through the same code as every other: the bot profile's system prompt (the caller's
system messages are added to it), memory trimmed to the token budget, deadlines and fallback.
Parameters the desk does not support are refused with 400 naming them, never ignored.

Function calling works as OpenAI's: the caller's `tools` and `tool_choice` go to the worker,
which renders them with the model's chat template and reads the model's calls; they come back
as `message.tool_calls` (or streamed `delta.tool_calls`) with finish_reason "tool_calls", and
the caller sends the results as `tool` messages after the question.
"""

import json
import os
import time
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from ninja import NinjaAPI
from pydantic import BaseModel

from chat import services, turns
from chat.answering import AnswerOptions, ToolOffer
from chat.api import errors, ratelimit
from chat.api.auth import ApiKeyAuth
from chat.api.errors import ApiError
from chat.api.listening import AnswerListener
from chat.api.schemas import (
    OPENAI_TURN_ROLES,
    Choice,
    Completion,
    CompletionIn,
    CompletionUsage,
    Model,
    ModelList,
    OpenAIErrorOut,
    ResponseMessage,
    last_user_message,
)
from chat.api.sse import SSE_EVENT, SSE_HEADERS
from chat.models import ApiKey, ApiScope
from runtime.aio import db

api = NinjaAPI(
    title="OpenAI-compatible chat API",
    version="1",
    description="POST /v1/chat/completions and GET /v1/models, for OpenAI's clients.",
    urls_namespace="openai_v1",
    auth=ApiKeyAuth(ApiScope.OPENAI),
    docs_url=None,
)
errors.install(api, errors.openai_body, invalid_status=400)


def model_name() -> str:
    """The name callers use: set, or the worker's model as the worker itself names it."""
    inference = settings.INFERENCE
    if settings.API["OPENAI_MODEL_NAME"] or inference["MODEL_NAME"]:
        return settings.API["OPENAI_MODEL_NAME"] or inference["MODEL_NAME"]
    model = inference["MODEL"]
    if model and not os.path.isdir(model):
        return model  # a hub id, e.g. Qwen/Qwen3-4B-Instruct-2507
    return os.path.basename(str(model or inference["MODEL_DIR"]).rstrip("/"))


ERRORS = {code: OpenAIErrorOut for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)}
_STARTED = int(time.time())


@api.get("/models", response={200: ModelList, **ERRORS})
async def models(request: HttpRequest):
    return ModelList(data=[Model(id=model_name(), created=_STARTED)])


@api.post(
    "/chat/completions",
    response={200: Completion, **ERRORS},
    openapi_extra={
        "responses": {
            200: {
                "description": "A completion, or with stream true, chunks as Server-Sent Events",
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
            }
        }
    },
)
async def chat_completions(request: HttpRequest, payload: CompletionIn):
    key: ApiKey = request.auth
    if payload.model != model_name():
        raise ApiError(
            404,
            "model_not_found",
            f"The model '{payload.model}' does not exist "
            f"here; this desk serves '{model_name()}' (GET /v1/models).",
            field="model",
        )
    if payload.stream_options is not None and not payload.stream:
        raise ApiError(
            400,
            errors.INVALID,
            "stream_options is only allowed with stream: true.",
            field="stream_options",
        )
    # The question is the newest user message; after it may come the assistant's tool calls
    # and the tools' results (the schema checked that).
    at = last_user_message(payload.messages)
    earlier, question = payload.messages[:at], payload.messages[at]
    exchange = payload.messages[at + 1 :]
    instructions = "\n\n".join(m.text for m in earlier if m.role in ("system", "developer"))
    # Earlier turns are stored as the transcript's text: an earlier question's tool calls and
    # results are not (the assistant's answer after them says what came of them).
    history = [
        (OPENAI_TURN_ROLES[m.role], m.text)
        for m in earlier
        if m.role in OPENAI_TURN_ROLES and (m.text or not m.tool_calls)
    ]
    conversation = await db(services.api_conversation_start)(
        api_key=key, history=history, instructions=instructions, user=payload.user or ""
    )
    listener = await AnswerListener(conversation).open()
    try:
        turn = await turns.customer_says(
            conversation=conversation,
            text=question.text,
            client_id=None,
            channel_name=listener.channel_name,
            options=AnswerOptions(
                max_tokens=payload.max_completion_tokens or payload.max_tokens,
                temperature=payload.temperature,
                top_p=payload.top_p,
                frequency_penalty=payload.frequency_penalty,
                instructions=instructions,
                guards=False,
                tools=_tool_offer(payload, exchange),
            ),
        )
    except BaseException:
        await listener.close()
        raise
    completion_id = f"chatcmpl-{turn.message.pk}"
    if payload.stream:
        include_usage = bool(payload.stream_options and payload.stream_options.include_usage)
        return StreamingHttpResponse(
            _chunks(key, listener, turn, completion_id, include_usage),
            content_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    try:
        text, done = [], None
        async for frame in _answer_frames(listener, turn):
            if frame["type"] == "bot.delta":
                text.append(frame["text"])
            elif frame["type"] == "bot.start" and frame.get("replace"):
                text.clear()  # the loop guard cut the answer back: what follows is all of it
            elif frame["type"] == "bot.done":
                done = frame
    finally:
        await listener.close()
    usage = _usage(done)
    await ratelimit.count_tokens(key, usage.total_tokens)
    calls = _tool_calls(done)
    content = "".join(text)
    return Completion(
        id=completion_id,
        created=int(time.time()),
        model=model_name(),
        choices=[
            Choice(
                message=ResponseMessage(
                    content=(content or None) if calls else content, tool_calls=calls or None
                ),
                finish_reason=_finish_reason(done),
            )
        ],
        usage=usage,
        sources=_sources(done),
    )


def _tool_offer(payload: CompletionIn, exchange: list) -> ToolOffer | None:
    """The caller's functions and the tool exchange after the question, for the worker."""
    if not payload.tools and not exchange:
        return None
    choice = payload.tool_choice
    return ToolOffer(
        tools=tuple(tool.model_dump(exclude_none=True) for tool in payload.tools or ()),
        choice=choice.model_dump() if isinstance(choice, BaseModel) else choice,
        parallel_calls=payload.parallel_tool_calls,
        exchange=tuple(m.model_turn() for m in exchange),
    )


async def _answer_frames(listener: AnswerListener, turn: turns.Turn) -> AsyncIterator[dict]:
    if turn.outcome != turns.Outcome.ANSWERING:
        return  # the caller asked for a human: an empty answer; staff see it in the console
    async for frame in listener.answer(turn.message.pk):
        if frame["type"] == "error":
            raise ApiError(503, errors.UNAVAILABLE, frame["message"])
        yield frame


def _usage(done: dict | None) -> CompletionUsage:
    usage = (done or {}).get("usage") or {"prompt_tokens": 0, "completion_tokens": 0}
    return CompletionUsage(
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        total_tokens=usage["prompt_tokens"] + usage["completion_tokens"],
    )


def _sources(done: dict | None) -> list[dict]:
    return (done or {}).get("sources") or []


def _tool_calls(done: dict | None) -> list[dict]:
    return (done or {}).get("tool_calls") or []


def _finish_reason(done: dict | None) -> str:
    if done and done["finish_reason"] in ("length", "tool_calls"):
        return done["finish_reason"]
    return "stop"


async def _chunks(
    key: ApiKey, listener: AnswerListener, turn: turns.Turn, completion_id: str, include_usage: bool
) -> AsyncIterator[bytes]:
    """OpenAI's stream: the role first, the text in pieces, a chunk with the finish reason
    (and the desk's `sources`), the usage (if asked for), then [DONE]."""
    created, model = int(time.time()), model_name()

    def chunk(delta: dict, finish_reason: str | None = None, usage=None, sources=None) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": []
            if usage
            else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if sources is not None:
            body["sources"] = sources
        if usage is not None:
            body["usage"] = usage.model_dump()
        elif include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    done = None
    # A guard may replace the text already shown (bot.start with `replace`: the worker cut a
    # loop back, or gave back held output that was no valid call), and a stream cannot take
    # back what it sent: after a replacement only what extends the text sent goes out.
    sent: list[str] = []
    sent_text = replacement = None
    try:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for frame in _answer_frames(listener, turn):
                if frame["type"] == "bot.start" and frame.get("replace"):
                    sent_text = sent_text if sent_text is not None else "".join(sent)
                    replacement = ""
                elif frame["type"] == "bot.delta" and replacement is None:
                    sent.append(frame["text"])
                    yield chunk({"content": frame["text"]})
                elif frame["type"] == "bot.delta":
                    replacement += frame["text"]
                    if replacement.startswith(sent_text) and len(replacement) > len(sent_text):
                        yield chunk({"content": replacement[len(sent_text) :]})
                        sent_text = replacement
                elif frame["type"] == "bot.done":
                    done = frame
        except ApiError as error:
            yield f"data: {json.dumps(errors.openai_body(error))}\n\n".encode()
            return
        for index, call in enumerate(_tool_calls(done)):
            # As OpenAI streams a call: its id, type and name first, then its arguments.
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            yield chunk(
                {
                    "tool_calls": [
                        {"index": index, "function": {"arguments": call["function"]["arguments"]}}
                    ]
                }
            )
        yield chunk({}, _finish_reason(done), sources=_sources(done))
        usage = _usage(done)
        await ratelimit.count_tokens(key, usage.total_tokens)
        if include_usage:
            yield chunk({}, usage=usage)
        yield b"data: [DONE]\n\n"
    finally:
        await listener.close()
