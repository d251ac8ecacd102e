"""Request and response bodies of the APIs: the desk's own (/api/v1/, chat.api.v1) and the
OpenAI-compatible one (/v1/, chat.api.openai). Unknown fields are refused naming the field (422
on /api/v1/, 400 as OpenAI does on /v1/), so a misspelt parameter never passes silently.
Sampling parameters are checked against SamplingRanges, the ranges a bot profile holds too."""

from datetime import datetime
from typing import Annotated, Any, Literal

from django.conf import settings
from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from chat import customers
from chat.models import Message
from chat.prompting import Range, SamplingRanges
from chat.text import TextError, clean_text, scrub


def _typed(field: str, *, required: bool = True, limit: str | None = None):
    """Text a person typed, checked as on the socket (chat.text): no control characters or
    lone surrogates, something visible, at most settings.CHAT[limit] characters."""

    def check(value: str) -> str:
        try:
            return clean_text(
                value,
                field=field,
                required=required,
                max_chars=settings.CHAT[limit] if limit else None,
            )
        except TextError as exc:
            raise ValueError(exc.message) from None

    return AfterValidator(check)


# What a customer types, and metadata that is kept but never refused.
CustomerText = Annotated[str, _typed("message", limit="MAX_MESSAGE_CHARS")]
Scrubbed = Annotated[str, AfterValidator(scrub)]

# Letters, digits and . _ : @ + - : safe in a URL path without escaping (ids such as
# "user-42", "wa:+4915112345678" or an e-mail address).
SESSION_ID_PATTERN = r"^[A-Za-z0-9._:@+-]+$"
SessionId = Field(
    min_length=1,
    max_length=128,
    pattern=SESSION_ID_PATTERN,
    description="Your own id for the conversation (letters, digits, . _ : @ + -): "
    "one conversation per id and API key.",
)


def _within(allowed: Range, **field):
    """An optional sampling parameter (None: the bot profile's value), within `allowed`."""
    return Field(None, ge=allowed.low, le=allowed.high, **field)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class CustomerIn(Strict):
    """The customer your back end vouches for (an API key with the "customers" scope)."""

    id: Annotated[str, AfterValidator(customers.clean_id)] = Field(
        description="Your own id for the customer, as your records have it (up to 200 "
        "characters). A session keeps its customer: another id for it is refused (409).",
    )
    name: Annotated[str | None, AfterValidator(customers.clean_name)] = Field(
        "", description="Shown to agents."
    )
    email: Annotated[str | None, AfterValidator(customers.clean_email)] = Field(
        "", description="Shown to agents."
    )


class ChatIn(Strict):
    session_id: str = SessionId
    user_input: CustomerText = Field(min_length=1, description="The customer's message.")
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[\x21-\x7e]+$",
        description="Your id for this message: a retry with the same id is not stored or "
        "answered twice.",
    )
    max_tokens: int | None = _within(
        SamplingRanges.max_tokens, description="At most the bot profile's max_tokens."
    )
    temperature: float | None = _within(SamplingRanges.temperature)
    top_p: float | None = _within(SamplingRanges.top_p)
    language: Scrubbed | None = Field(None, max_length=35, description="BCP 47, e.g. en, zh-CN")
    region: Scrubbed | None = Field(None, max_length=64)
    stream: bool = Field(
        False,
        description="Server-Sent Events instead of one JSON body "
        "(also with 'Accept: text/event-stream').",
    )
    customer: CustomerIn | None = Field(
        None,
        description="The verified customer this session is for; only with an API key that has "
        "the 'customers' scope (403 otherwise). Name them on every call: each call renews "
        "the verification (docs/verified-customers.md).",
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


Status = Literal["bot", "waiting", "human", "closed"]


class Source(BaseModel):
    article_id: int
    title: str
    url: str


class ActionOut(BaseModel):
    """A call of the company's back end for the customer (docs/actions.md); the widget's
    `action` frame (docs/protocol.md)."""

    call_id: int
    name: str
    label: str
    status: Literal[
        "ok",
        "error",
        "timeout",
        "bad_response",
        "refused",
        "confirm_required",
        "confirmed",
        "cancelled",
    ]
    text: str = Field(description="The result (status ok), else empty.")
    fields: dict = Field(description="The result's values, by name.")
    arguments: dict
    latency_ms: int | None
    confirm_text: str = Field(
        description="For confirm_required: what will be done, to ask the customer; confirm "
        "with POST …/actions/{call_id}/confirm, or cancel."
    )


class ChatOut(BaseModel):
    session_id: str
    conversation_id: str
    question_id: int = Field(description="The stored customer message.")
    message_id: int | None = Field(
        description="The bot's answer; null when the bot did not "
        "answer (a human holds the conversation)."
    )
    response: str | None
    usage: Usage
    finish_reason: str | None
    ttft_ms: int | None
    total_ms: int | None
    fallback: bool = Field(description="Answered by the fallback rules (model slow or down).")
    partial: bool = False
    sources: list[Source] = Field(
        default_factory=list, description="The help-centre articles the answer was grounded in."
    )
    status: Status = Field(
        description="The conversation's mode after this call: bot, "
        "waiting (for a human), human (an agent holds it), "
        "closed."
    )
    guards: list[str] = Field(
        default_factory=list,
        description="The product's guards that "
        "shaped the answer: not_covered, complaint, ask_details, language, "
        "echo, repetition, length (docs/protocol.md).",
    )
    offer_human: bool = Field(
        False,
        description="The answer offers a human agent: show the "
        "customer a way to ask for one (POST …/handoff).",
    )
    actions: list[ActionOut] = Field(
        default_factory=list,
        description="The company's back end, called for this answer (an order looked up), "
        "or waiting for the customer's confirmation (status confirm_required).",
    )


class MessageOut(BaseModel):
    id: int
    role: Literal["customer", "bot", "agent", "system"]
    text: str
    created_at: datetime
    partial: bool
    fallback: bool
    rating: Literal["up", "down"] | None
    agent_name: str


class HistoryOut(BaseModel):
    session_id: str
    conversation_id: str
    status: Status
    messages: list[MessageOut]


class FeedbackIn(Strict):
    message_id: int = Field(ge=1, le=2**63 - 1)
    rating: Literal["up", "down"]
    comment: Annotated[str, _typed("comment", required=False)] = Field("", max_length=1000)


class FeedbackOut(BaseModel):
    message_id: int
    rating: Literal["up", "down"]


class HandoffOut(BaseModel):
    status: Status
    agents_available: bool
    business_hours: dict


# --- /v1/: OpenAI's shapes ------------------------------------------------------------------------

# The roles of OpenAI's messages that are the conversation's turns, as the desk stores them; the
# others (system, developer) are the caller's instructions.
OPENAI_TURN_ROLES = {"user": Message.Role.CUSTOMER, "assistant": Message.Role.BOT}
# OpenAI's shape has no place for them; clients keep fields they do not know (the official
# ones as `completion.sources`, or in `model_extra`).
SOURCES_DOC = (
    "The desk's addition: the help-centre articles the answer was grounded in (in a "
    "stream, on the chunk with the finish reason)."
)


class TextPart(Strict):
    type: Literal["text"]
    text: str


# OpenAI's rule for function names.
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionCallIn(Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str = Field(max_length=32_768, description="The arguments, a JSON object as text.")


class ToolCallIn(Strict):
    """A call the assistant made earlier, as the caller got it."""

    id: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    type: Literal["function"]
    function: FunctionCallIn


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: Scrubbed | None = Field(None, max_length=64)
    tool_calls: list[ToolCallIn] | None = Field(None, min_length=1, max_length=128)
    tool_call_id: str | None = Field(None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _tool_fields(self) -> "ChatMessage":
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a tool message, and only one, has the tool_call_id it answers")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (null only beside an assistant's tool_calls)")
        return self

    @property
    def text(self) -> str:
        """The content as stored: checked like a customer's message (no control characters,
        something visible); ValueError otherwise."""
        if self.content is None:
            return ""
        raw = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        try:
            return clean_text(raw, field=f"{self.role} message", required=self.role == "user")
        except TextError as exc:
            raise ValueError(exc.message) from None

    def model_turn(self) -> dict:
        """The message as the model's turn (an inference_worker.protocol.ChatTurn): an
        assistant's calls or a tool's result."""
        turn: dict[str, Any] = {"role": self.role, "content": self.text}
        if self.tool_calls:
            turn["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            turn["tool_call_id"] = self.tool_call_id
        return turn


class FunctionIn(Strict):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = Field(None, max_length=4000)
    parameters: dict[str, Any] | None = Field(
        None, description="A JSON Schema of the arguments: an object."
    )
    strict: bool | None = Field(None, description="Arguments that follow `parameters` exactly.")

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, parameters: dict | None) -> dict | None:
        if parameters is None:
            return None
        if parameters.get("type", "object") != "object":
            raise ValueError("must be the JSON Schema of an object")
        try:
            validator_for(parameters).check_schema(parameters)
        except SchemaError as exc:
            where = "/".join(map(str, exc.path))
            raise ValueError(
                f"is not a valid JSON Schema ({exc.message[:200]}{' at ' + where if where else ''})"
            ) from None
        return parameters


class ToolIn(Strict):
    type: Literal["function"]
    function: FunctionIn


class FunctionName(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: FunctionName


TOOL_CHOICES = ("none", "auto", "required")


def _tool_choice(value):
    """One error naming `tool_choice` for any wrong value, not one per shape it might have."""
    if isinstance(value, str) and value in TOOL_CHOICES:
        return value
    if isinstance(value, dict):
        try:
            return NamedToolChoice.model_validate(value)
        except PydanticValidationError:
            pass
    raise ValueError(
        "must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": "<a function in tools>"}}'
    )


ToolChoiceIn = Annotated[
    Literal["none", "auto", "required"] | NamedToolChoice, BeforeValidator(_tool_choice)
]


class StreamOptions(Strict):
    include_usage: bool = False


class CompletionIn(Strict):
    model: str = Field(max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = _within(SamplingRanges.max_tokens)
    max_completion_tokens: int | None = _within(SamplingRanges.max_tokens)
    temperature: float | None = _within(SamplingRanges.temperature)
    top_p: float | None = _within(SamplingRanges.top_p)
    frequency_penalty: float | None = _within(SamplingRanges.frequency_penalty)
    n: int | None = Field(None, ge=1, le=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Scrubbed | None = Field(None, max_length=256)
    tools: list[ToolIn] | None = Field(None, min_length=1, max_length=128)
    tool_choice: ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None

    @field_validator("messages")
    @classmethod
    def _conversation(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if len(messages) > settings.API["MAX_OPENAI_MESSAGES"]:
            raise ValueError(f"at most {settings.API['MAX_OPENAI_MESSAGES']} messages")
        if messages[-1].role not in ("user", "tool"):
            raise ValueError("the last message must be the user's (or a tool's result)")
        question = last_user_message(messages)
        if question is None:
            raise ValueError("a user message is required")
        if any(m.role not in ("assistant", "tool") for m in messages[question + 1 :]):
            raise ValueError(
                "after the last user message only the assistant's tool calls and the tools' "
                "results may follow"
            )
        called: set[str] = set()
        for message in messages:
            called.update(call.id for call in message.tool_calls or ())
            if message.role == "tool" and message.tool_call_id not in called:
                raise ValueError(
                    f"the tool message for '{message.tool_call_id}' answers no earlier "
                    "assistant tool call"
                )
        texts = [m.text for m in messages]  # each checked as a typed message (ValueError)
        limit = settings.CHAT["MAX_MESSAGE_CHARS"]
        if any(
            len(text) > limit
            for m, text in zip(messages, texts, strict=True)
            if m.role in (*OPENAI_TURN_ROLES, "tool")
        ):
            raise ValueError(f"each user, assistant or tool message has at most {limit} characters")
        return messages

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, tools: list[ToolIn] | None) -> list[ToolIn] | None:
        names = [tool.function.name for tool in tools or ()]
        if len(set(names)) != len(names):
            raise ValueError("function names must be unique")
        return tools

    @field_validator("tool_choice", "parallel_tool_calls")
    @classmethod
    def _needs_tools(cls, value, info: ValidationInfo):
        if value is None or "tools" not in info.data:  # tools themselves failed: said there
            return value
        tools = info.data["tools"]
        if not tools:
            raise ValueError(f"{info.field_name} is only allowed when tools are given")
        if isinstance(value, NamedToolChoice) and value.function.name not in {
            tool.function.name for tool in tools
        }:
            raise ValueError(f"the function '{value.function.name}' is not in tools")
        return value


def last_user_message(messages: list[ChatMessage]) -> int | None:
    """The index of the newest user message: the question an answer is for."""
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="A JSON object, as text.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="Null when the answer is only tool calls.")
    # As OpenAI answers: present only when the model called a function.
    tool_calls: list[ToolCallOut] | None = Field(None, exclude_if=lambda calls: calls is None)


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length", "tool_calls"]


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    sources: list[Source] = Field(default_factory=list, description=SOURCES_DOC)


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "desk"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorOut(BaseModel):
    error: OpenAIError
