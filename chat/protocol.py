"""Parsing and checking what a customer's browser sends, before anything touches the database."""

import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from pydantic import ValidationError

from chat.frames import CLIENT_FRAME_TYPES, MAX_COMMENT_CHARS, ErrorCode, client_frame_adapter
from chat.text import TextError, clean_text, scrub

MAX_CLIENT_ID_CHARS = 64
MAX_NAME_CHARS = 200  # Conversation.customer_name
MAX_EMAIL_CHARS = 254  # Conversation.customer_email (an EmailField)
MAX_ID = 2**63 - 1  # database ids are signed 64-bit; a larger one would fail the query itself
NOT_A_BOT_ANSWER = "Only answers of this conversation's bot can be rated."


class FrameError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def parse_client_frame(
    text_data: str | None, bytes_data: bytes | None, *, max_bytes: int, max_chars: int
) -> dict:
    """A validated client frame, or FrameError with a code and a message a person can act on."""
    if text_data is None:
        raise FrameError(ErrorCode.BAD_FRAME, "Binary frames are not accepted; send JSON text.")
    if len(text_data) > max_bytes or len(text_data.encode("utf-8", "surrogatepass")) > max_bytes:
        raise FrameError(ErrorCode.FRAME_TOO_LARGE, f"Frames are limited to {max_bytes} bytes.")
    try:
        raw = json.loads(text_data)
    except (ValueError, RecursionError):
        raise FrameError(ErrorCode.BAD_FRAME, "Frames must be JSON objects.") from None
    if not isinstance(raw, dict):
        raise FrameError(ErrorCode.BAD_FRAME, "Frames must be JSON objects.")
    if raw.get("type") not in CLIENT_FRAME_TYPES:
        raise FrameError(
            ErrorCode.UNKNOWN_TYPE,
            f"Unknown frame type {str(raw.get('type'))[:40]!r}; expected one of "
            f"{', '.join(CLIENT_FRAME_TYPES)}.",
        )
    try:
        frame = client_frame_adapter.validate_python(raw, strict=True)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "frame" for e in exc.errors())
        raise FrameError(ErrorCode.BAD_FRAME, f"Invalid or missing field(s): {fields}.") from None
    if frame["type"] == "message":
        _check_message(frame, max_chars=max_chars)
    elif frame["type"] in ("feedback", "csat"):
        _check_rating(frame)
    elif frame["type"] == "contact":
        _check_contact(frame)
    return frame


def _clean(value: str, **kwargs) -> str:
    """chat.text.clean_text, refusing with the socket's error codes."""
    try:
        return clean_text(value, **kwargs)
    except TextError as exc:
        raise FrameError(exc.code, exc.message) from None


def _check_contact(frame: dict) -> None:
    email = _clean(frame["email"], field="e-mail address", single_line=True)
    if len(email) > MAX_EMAIL_CHARS:
        raise FrameError(ErrorCode.BAD_FRAME, "That e-mail address is too long.")
    try:
        validate_email(email)
    except DjangoValidationError:
        raise FrameError(ErrorCode.BAD_FRAME, "That e-mail address does not look right.") from None
    frame["email"] = email
    # A name is a courtesy: an invisible one is dropped, a long one shortened.
    name = _clean(frame.get("name", ""), field="name", required=False, single_line=True)
    frame["name"] = name[:MAX_NAME_CHARS].strip()


def _check_rating(frame: dict) -> None:
    if frame["type"] == "csat" and not 1 <= frame["score"] <= 5:
        raise FrameError(ErrorCode.BAD_FRAME, "score must be a whole number from 1 to 5.")
    # A whole number that can be no row's id (0, negative, past 64 bits) is refused like any
    # other id that is no bot answer here, without asking the database (which would fail on
    # the last kind): for the client, all of them are the same mistake.
    if frame["type"] == "feedback" and not 1 <= frame["message_id"] <= MAX_ID:
        raise FrameError(ErrorCode.UNKNOWN_MESSAGE, NOT_A_BOT_ANSWER)
    frame["comment"] = _clean(
        frame.get("comment", ""), field="comment", required=False, max_chars=MAX_COMMENT_CHARS
    )


def _check_message(frame: dict, *, max_chars: int) -> None:
    client_id = frame.get("client_id")
    if client_id is not None and not _valid_client_id(client_id):
        raise FrameError(ErrorCode.BAD_FRAME, "client_id must be 1 to 64 printable characters.")
    text = _clean(frame["text"], field="message")
    if len(text) > max_chars:
        raise FrameError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"Messages are limited to {max_chars} characters; this one has {len(text)}. "
            "Please split it.",
        )
    frame["text"] = text


def _valid_client_id(client_id: object) -> bool:
    # isprintable() is false for surrogates and controls: an id that can be echoed back.
    return (
        isinstance(client_id, str)
        and 1 <= len(client_id) <= MAX_CLIENT_ID_CHARS
        and client_id.isprintable()
    )


def client_id_of(text_data: str | None, *, max_bytes: int) -> str | None:
    """The client_id of a refused message frame, when it is one a reply can carry, so the
    widget stops resending that message; None otherwise. An id with a lone surrogate cannot
    be sent back in a UTF-8 frame at all."""
    if not text_data or len(text_data) > max_bytes:
        return None
    try:
        frame = json.loads(text_data)
    except (ValueError, RecursionError):
        return None
    client_id = frame.get("client_id") if isinstance(frame, dict) else None
    return client_id if _valid_client_id(client_id) else None


@dataclass(frozen=True)
class ConnectParams:
    conversation_id: str
    token: str
    site_key: str
    origin: str
    language: str
    region: str
    timezone: str
    page_url: str
    user_agent: str
    # A signed token of the verified customer (chat/customers.py), checked, never trusted as is.
    customer_token: str = ""


def connect_params(scope: dict) -> ConnectParams:
    """What the socket URL and headers say about the customer. Values are only recorded and
    put into the prompt, never trusted for access: that is the token's job."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }

    def param(name: str, limit: int) -> str:
        return scrub((query.get(name) or [""])[0])[:limit]

    language = param("lang", 35) or _first_language(headers.get("accept-language", ""))
    page_url = param("page", 2000)
    if urlsplit(page_url).scheme not in ("http", "https"):
        page_url = ""
    return ConnectParams(
        conversation_id=param("conversation", 64),
        token=param("token", 128),
        site_key=param("site", 64),
        origin=headers.get("origin", "")[:300],
        language=language if _looks_like_language_tag(language) else "",
        region=param("region", 64),
        timezone=param("tz", 64),
        page_url=page_url,
        user_agent=scrub(headers.get("user-agent", ""))[:512],
        # Unscrubbed, and cut one character past the largest token accepted: a token is
        # refused as it came (too large, malformed), never altered into another one.
        customer_token=(query.get("customer_token") or [""])[0][
            : settings.CUSTOMERS["TOKEN_MAX_BYTES"] + 1
        ],
    )


def _first_language(accept_language: str) -> str:
    return accept_language.split(",")[0].split(";")[0].strip()[:35]


def _looks_like_language_tag(tag: str) -> bool:
    return bool(tag) and all(part.isalnum() and len(part) <= 8 for part in tag.split("-"))
