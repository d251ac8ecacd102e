"""An OpenAI-compatible chat API, /v1/: `POST /v1/chat/completions` and `GET /v1/models`.

The official clients work unchanged with `base_url=<desk>/v1` and a desk API key with the
`openai` scope. Like OpenAI's, a call is stateless (the `messages` array is the history), but
each is stored as a conversation on the `openai` channel so staff can review it, and the answer
comes through the same code as every other: the bot profile's system prompt (the caller's
system messages are added to it), memory trimmed to the token budget, deadlines and fallback.
Parameters the desk does not support are refused with 400 naming them, never ignored.
"""

import json
import os
import time
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from ninja import NinjaAPI

from chat import services, turns
from chat.answering import AnswerOptions
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
    *earlier, last = payload.messages
    instructions = "\n\n".join(m.text for m in earlier if m.role not in OPENAI_TURN_ROLES)
    history = [(OPENAI_TURN_ROLES[m.role], m.text) for m in earlier if m.role in OPENAI_TURN_ROLES]
    conversation = await db(services.api_conversation_start)(
        api_key=key, history=history, instructions=instructions, user=payload.user or ""
    )
    listener = await AnswerListener(conversation).open()
    try:
        turn = await turns.customer_says(
            conversation=conversation,
            text=last.text,
            client_id=None,
            channel_name=listener.channel_name,
            options=AnswerOptions(
                max_tokens=payload.max_completion_tokens or payload.max_tokens,
                temperature=payload.temperature,
                top_p=payload.top_p,
                frequency_penalty=payload.frequency_penalty,
                instructions=instructions,
                guards=False,
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
    return Completion(
        id=completion_id,
        created=int(time.time()),
        model=model_name(),
        choices=[
            Choice(
                message=ResponseMessage(content="".join(text)), finish_reason=_finish_reason(done)
            )
        ],
        usage=usage,
        sources=_sources(done),
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


def _finish_reason(done: dict | None) -> str:
    return "length" if done and done["finish_reason"] == "length" else "stop"


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
    try:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for frame in _answer_frames(listener, turn):
                if frame["type"] == "bot.delta":
                    yield chunk({"content": frame["text"]})
                elif frame["type"] == "bot.done":
                    done = frame
        except ApiError as error:
            yield f"data: {json.dumps(errors.openai_body(error))}\n\n".encode()
            return
        yield chunk({}, _finish_reason(done), sources=_sources(done))
        usage = _usage(done)
        await ratelimit.count_tokens(key, usage.total_tokens)
        if include_usage:
            yield chunk({}, usage=usage)
        yield b"data: [DONE]\n\n"
    finally:
        await listener.close()
