"""The desk's own API, /api/v1/: chat by the caller's session id, whole or streamed.

Views stay thin: authenticate (the `auth` of each operation), map the session, hand the
message to `chat.turns` exactly as the customer's socket does, and read the answer's frames
through an `AnswerListener`. Schema at /api/v1/openapi.json, interactive docs at /api/v1/docs.
"""

import functools
from collections.abc import AsyncIterator

from django.http import HttpRequest, StreamingHttpResponse
from ninja import NinjaAPI, Path

from chat import answering, customers, frames, selectors, services, turns
from chat.answering import AnswerOptions
from chat.api import errors, ratelimit
from chat.api.auth import ApiKeyAuth
from chat.api.errors import ApiError
from chat.api.listening import AnswerListener, NewsListener
from chat.api.schemas import (
    SESSION_ID_PATTERN,
    ActionOut,
    ChatIn,
    ChatOut,
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    HandoffOut,
    HistoryOut,
    MessageOut,
)
from chat.api.sse import SSE_EVENT, SSE_HEADERS, sse, turn_stream
from chat.handoff import agent_name, handoff_request
from chat.models import ApiKey, ApiScope, Conversation, Message
from runtime.aio import db

api = NinjaAPI(
    title="Customer-service desk API",
    version="1",
    description="Chat with the desk's assistant from your own back end. Authenticate with "
    "'Authorization: Bearer <API key>' (create one with `manage.py "
    'create_api_key`). Errors: {"error": {"code", "message", "field"?}}.',
    urls_namespace="api_v1",
    auth=ApiKeyAuth(ApiScope.CHAT),
)
errors.install(api, errors.desk_body)

SessionPath = Path(
    ...,
    min_length=1,
    max_length=128,
    pattern=SESSION_ID_PATTERN,
    description="Your own id for the conversation.",
)
ERRORS = {code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)}
_STREAM_DOC = {
    "responses": {
        200: {
            "description": "The answer as JSON, or with stream=true as "
            "Server-Sent Events (see docs/protocol.md).",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        }
    },
}


async def _session(request: HttpRequest, session_id: str) -> Conversation:
    conversation = await db(selectors.api_session_conversation)(
        api_key=request.auth, session_id=session_id
    )
    if conversation is None:
        raise ApiError(
            404,
            errors.NOT_FOUND,
            f"No session '{session_id}' for this API key.",
            field="session_id",
        )
    return conversation


@api.post(
    "/chat",
    response={200: ChatOut, **ERRORS},
    openapi_extra=_STREAM_DOC,
    summary="Send the customer's message; get the bot's answer",
)
async def chat(request: HttpRequest, payload: ChatIn):
    key: ApiKey = request.auth
    stream = payload.stream or "text/event-stream" in request.headers.get("Accept", "")
    customer = _vouched_customer(key, payload)
    try:
        conversation = await db(services.api_session_open)(
            api_key=key,
            session_id=payload.session_id,
            channel=Conversation.Channel.API,
            language=payload.language or "",
            region=payload.region or "",
            customer=customer,
        )
    except services.CustomerMismatch:
        raise ApiError(
            409,
            errors.CONFLICT,
            "This session is verified for another customer, and a session never changes "
            "customer: use a new session_id for this customer.",
            field="customer.id",
        ) from None
    if not await answering.answer_ended(conversation.pk):
        raise ApiError(
            409,
            errors.CONFLICT,
            "An answer is still streaming in this session; "
            "send the next message when it has ended.",
            field="session_id",
        )
    listener = await AnswerListener(conversation).open()
    try:
        turn = await turns.customer_says(
            conversation=conversation,
            text=payload.user_input,
            client_id=payload.client_id,
            channel_name=listener.channel_name,
            options=AnswerOptions(
                max_tokens=payload.max_tokens, temperature=payload.temperature, top_p=payload.top_p
            ),
        )
    except services.ConversationClosed:
        await listener.close()
        raise ApiError(
            409,
            errors.CONFLICT,
            "This session's conversation is closed. Use a new session_id to start another.",
            field="session_id",
        ) from None
    except BaseException:
        await listener.close()
        raise
    if stream:
        return StreamingHttpResponse(
            turn_stream(listener, conversation, turn, on_done=functools.partial(_count_usage, key)),
            content_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    try:
        return await _whole(key, listener, conversation, turn, payload.session_id)
    finally:
        await listener.close()


def _vouched_customer(key: ApiKey, payload: ChatIn) -> customers.VerifiedCustomer | None:
    """The customer the call names, if its key may vouch for one; refused before anything is
    stored otherwise."""
    if payload.customer is None:
        return None
    if not key.allows(ApiScope.CUSTOMERS):
        raise ApiError(
            403,
            errors.FORBIDDEN,
            "This API key lacks the 'customers' scope, so it cannot name a verified customer: "
            "add the scope to the key in admin (or make one with --scopes chat,customers), "
            "or leave out 'customer'.",
            field="customer",
        )
    return customers.vouched_by_api_key(
        id=payload.customer.id, name=payload.customer.name, email=payload.customer.email
    )


async def _whole(
    key: ApiKey,
    listener: AnswerListener,
    conversation: Conversation,
    turn: turns.Turn,
    session_id: str,
) -> ChatOut:
    text, start, done, status = [], None, None, conversation.status
    actions: dict[int, dict] = {}  # by call id: the newest frame of each call
    if turn.outcome == turns.Outcome.ANSWERING:
        async for frame in listener.answer(turn.message.pk):
            kind = frame["type"]
            if kind == "action":
                actions[frame["call_id"]] = frame
            elif kind == "bot.start":
                start = frame
                if frame.get("replace"):  # a guard changed the answer: what follows is all
                    text.clear()
            elif kind == "bot.delta":
                text.append(frame["text"])
            elif kind == "bot.done":
                done = frame
            elif kind == "status":
                status = frame["status"]
            elif kind == "error":
                raise ApiError(503, errors.UNAVAILABLE, frame["message"])
    elif turn.outcome == turns.Outcome.HANDOFF:
        status = Conversation.Status.WAITING
    usage = (done or {}).get("usage") or {"prompt_tokens": 0, "completion_tokens": 0}
    await ratelimit.count_tokens(key, usage["prompt_tokens"] + usage["completion_tokens"])
    if done is not None and done["finish_reason"] in ("takeover", "handoff", "closed"):
        status = {"takeover": "human", "handoff": "waiting"}.get(done["finish_reason"], "closed")
    return ChatOut(
        session_id=session_id,
        conversation_id=str(conversation.pk),
        question_id=turn.message.pk,
        message_id=start["message_id"] if start else None,
        response="".join(text) if start else None,
        usage=usage,
        finish_reason=done["finish_reason"] if done else None,
        ttft_ms=done["ttft_ms"] if done else None,
        total_ms=done["total_ms"] if done else None,
        fallback=bool(done and done["fallback"]),
        partial=bool(done and done["partial"]),
        sources=(done or {}).get("sources") or [],
        status=status,
        guards=(done or {}).get("guards") or [],
        offer_human=bool(done and done["offer_human"]),
        actions=[ActionOut(**_action_fields(frame)) for frame in actions.values()],
    )


def _action_fields(frame: dict) -> dict:
    return {name: value for name, value in frame.items() if name != "type"}


async def _count_usage(key: ApiKey, done: dict) -> None:
    usage = done["usage"]
    await ratelimit.count_tokens(key, usage["prompt_tokens"] + usage["completion_tokens"])


# --- sessions ------------------------------------------------------------------------------------


@api.get(
    "/sessions/{session_id}/messages",
    response={200: HistoryOut, **ERRORS},
    summary="The session's transcript, oldest first",
)
async def messages(request: HttpRequest, session_id: str = SessionPath):
    conversation = await _session(request, session_id)
    history = await db(selectors.conversation_history)(conversation_id=conversation.pk)
    return HistoryOut(
        session_id=session_id,
        conversation_id=str(conversation.pk),
        status=conversation.status,
        messages=[_message_out(m) for m in history],
    )


def _message_out(message: Message) -> MessageOut:
    feedback = getattr(message, "feedback", None)
    return MessageOut(
        id=message.pk,
        role=message.role,
        text=message.text,
        created_at=message.created_at,
        partial=message.is_partial,
        fallback=message.is_fallback,
        rating=feedback.rating if feedback else None,
        agent_name=(agent_name(message.author) if message.role == Message.Role.AGENT else ""),
    )


@api.post(
    "/sessions/{session_id}/feedback",
    response={200: FeedbackOut, **ERRORS},
    summary="Rate one of the bot's answers",
)
async def feedback(request: HttpRequest, payload: FeedbackIn, session_id: str = SessionPath):
    conversation = await _session(request, session_id)
    try:
        await db(services.feedback_submit)(
            conversation=conversation,
            message_id=payload.message_id,
            rating=payload.rating,
            comment=payload.comment,
        )
    except Message.DoesNotExist:
        raise ApiError(
            404,
            errors.NOT_FOUND,
            "Only the bot's answers in this session can be rated.",
            field="message_id",
        ) from None
    return FeedbackOut(message_id=payload.message_id, rating=payload.rating)


@api.post(
    "/sessions/{session_id}/handoff",
    response={200: HandoffOut, **ERRORS},
    summary="Ask for a human agent",
)
async def handoff(request: HttpRequest, session_id: str = SessionPath):
    conversation = await _session(request, session_id)
    try:
        outcome = await db(handoff_request)(conversation=conversation)
    except services.ConversationClosed:
        raise ApiError(
            409, errors.CONFLICT, "This session's conversation is closed.", field="session_id"
        ) from None
    return HandoffOut(
        status=conversation.status,
        agents_available=outcome.agents_available,
        business_hours=outcome.business_hours,
    )


@api.post(
    "/sessions/{session_id}/actions/{call_id}/confirm",
    response={200: ActionOut, **ERRORS},
    summary="Confirm an action that changes something (status confirm_required)",
)
async def action_confirm(request: HttpRequest, call_id: int, session_id: str = SessionPath):
    return await _answer_call(request, session_id, call_id, answering.confirm_call)


@api.post(
    "/sessions/{session_id}/actions/{call_id}/cancel",
    response={200: ActionOut, **ERRORS},
    summary="Say no to an action waiting for confirmation",
)
async def action_cancel(request: HttpRequest, call_id: int, session_id: str = SessionPath):
    return await _answer_call(request, session_id, call_id, answering.cancel_call)


async def _answer_call(request: HttpRequest, session_id: str, call_id: int, answer) -> ActionOut:
    """The call is made exactly once however often it is confirmed (answering.confirm_call);
    the response is the call as it ended, or as it stands for a second confirmation."""
    conversation = await _session(request, session_id)
    frame = await answer(conversation.pk, call_id)
    if frame is None:
        raise ApiError(404, errors.NOT_FOUND, "No such action in this session.", field="call_id")
    return ActionOut(**_action_fields(frame))


KEEPALIVE_SECONDS = 15.0
_EVENTS_DOC = {
    "responses": {
        200: {
            "description": "Server-Sent Events: agent.joined, agent.message, "
            "agent.typing, agent.left, conversation.closed (then "
            "the stream ends); a comment line every 15 s.",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        }
    },
}


@api.get(
    "/sessions/{session_id}/events",
    response=ERRORS,
    openapi_extra=_EVENTS_DOC,
    summary="Stream what agents do in the session",
)
async def session_events(request: HttpRequest, session_id: str = SessionPath):
    conversation = await _session(request, session_id)
    listener = await NewsListener(conversation).open()

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            if conversation.status == Conversation.Status.CLOSED:
                yield sse(frames.conversation_closed_frame())
                return
            async for frame in listener.news(KEEPALIVE_SECONDS):
                yield b": keepalive\n\n" if frame is None else sse(frame)
        finally:
            await listener.close()

    return StreamingHttpResponse(stream(), content_type="text/event-stream", headers=SSE_HEADERS)
