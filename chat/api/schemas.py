"""Request and response bodies of the desk's API (/api/v1/). Unknown fields are refused with
422 naming the field, so a misspelt parameter never passes silently."""

from datetime import datetime
from typing import Annotated, Literal

from django.conf import settings
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from chat.text import TextError, clean_text, scrub


def _typed(field: str, *, required: bool = True, limit: str | None = None):
    """Text a person typed, checked as on the socket (chat.text): no control characters or
    lone surrogates, something visible, at most settings.CHAT[limit] characters."""

    def check(value: str) -> str:
        try:
            return clean_text(value, field=field, required=required,
                              max_chars=settings.CHAT[limit] if limit else None)
        except TextError as exc:
            raise ValueError(exc.message) from None

    return AfterValidator(check)


# What a customer types, and metadata that is kept but never refused.
CustomerText = Annotated[str, _typed("message", limit="MAX_MESSAGE_CHARS")]
Scrubbed = Annotated[str, AfterValidator(scrub)]

# Letters, digits and . _ : @ + - : safe in a URL path without escaping (ids such as
# "user-42", "wa:+4915112345678" or an e-mail address).
SESSION_ID_PATTERN = r"^[A-Za-z0-9._:@+-]+$"
SessionId = Field(min_length=1, max_length=128, pattern=SESSION_ID_PATTERN,
                  description="Your own id for the conversation (letters, digits, . _ : @ + -): "
                              "one conversation per id and API key.")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class ChatIn(Strict):
    session_id: str = SessionId
    user_input: CustomerText = Field(min_length=1, description="The customer's message.")
    client_id: str | None = Field(
        None, min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
        description="Your id for this message: a retry with the same id is not stored or "
                    "answered twice.")
    max_tokens: int | None = Field(None, ge=1, le=8192,
                                   description="At most the bot profile's max_tokens.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    language: Scrubbed | None = Field(None, max_length=35, description="BCP 47, e.g. en, zh-CN")
    region: Scrubbed | None = Field(None, max_length=64)
    stream: bool = Field(False, description="Server-Sent Events instead of one JSON body "
                                            "(also with 'Accept: text/event-stream').")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


Status = Literal["bot", "waiting", "human", "closed"]


class Source(BaseModel):
    article_id: int
    title: str
    url: str


class ChatOut(BaseModel):
    session_id: str
    conversation_id: str
    question_id: int = Field(description="The stored customer message.")
    message_id: int | None = Field(description="The bot's answer; null when the bot did not "
                                               "answer (a human holds the conversation).")
    response: str | None
    usage: Usage
    finish_reason: str | None
    ttft_ms: int | None
    total_ms: int | None
    fallback: bool = Field(description="Answered by the fallback rules (model slow or down).")
    partial: bool = False
    sources: list[Source] = Field(default_factory=list, description="The help-centre "
                                  "articles the answer was grounded in.")
    status: Status = Field(description="The conversation's mode after this call: bot, "
                                       "waiting (for a human), human (an agent holds it), "
                                       "closed.")
    guards: list[str] = Field(default_factory=list, description="The product's guards that "
                              "shaped the answer: not_covered, complaint, ask_details, language, "
                              "echo, repetition, length (docs/protocol.md).")
    offer_human: bool = Field(False, description="The answer offers a human agent: show the "
                              "customer a way to ask for one (POST …/handoff).")


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
