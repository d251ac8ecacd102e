"""Transcript exports for review: JSON (nested) and CSV (one row per message).

Pure functions over a queryset of conversations, used by the admin's export actions. Both
formats are built from `transcripts()`, so they always carry the same fields, and come a piece
at a time (a conversation, a row) as the database returns them, so an export of any size is
streamed in little memory.
"""

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Prefetch, QuerySet

from chat.models import Conversation, Message

# Spreadsheets run a cell starting with one of these as a formula (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Excel reads a CSV without a byte order mark as the local code page and garbles Chinese.
_UTF8_BOM = "\ufeff"

CONVERSATION_FIELDS = (
    "id",
    "site",
    "site_key",
    "status",
    "language",
    "region",
    "created_at",
    "csat_score",
    "csat_comment",
    "handoff_requested_at",
)
MESSAGE_FIELDS = (
    "id",
    "role",
    "text",
    "created_at",
    "author",
    "model_name",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "total_ms",
    "finish_reason",
    "is_fallback",
    "is_partial",
)
CSV_HEADER = (
    *(f"conversation_{name}" for name in CONVERSATION_FIELDS),
    *(f"message_{name}" for name in MESSAGE_FIELDS),
    "feedback_rating",
    "feedback_comment",
)


def transcripts(conversations: QuerySet[Conversation]) -> Iterator[dict[str, Any]]:
    """Each conversation as a dict with its messages (oldest first) and their feedback."""
    messages = Message.objects.select_related("author", "feedback").order_by("id")
    # A fresh queryset on the selected ids: the caller's may carry annotations, joins or
    # DISTINCT (the admin changelist's do), which the export has no use for.
    selected = (
        Conversation.objects.filter(pk__in=conversations.values("pk"))
        .select_related("site")
        .prefetch_related(Prefetch("messages", queryset=messages))
        .order_by("created_at", "pk")
    )
    for conversation in selected.iterator(chunk_size=100):
        yield _conversation_dict(conversation)


def _conversation_dict(conversation: Conversation) -> dict[str, Any]:
    site = conversation.site
    return {
        "id": str(conversation.id),
        "site": site.name if site else None,
        "site_key": site.key if site else None,
        "status": conversation.status,
        "language": conversation.language,
        "region": conversation.region,
        "created_at": conversation.created_at,
        "csat_score": conversation.csat_score,
        "csat_comment": conversation.csat_comment,
        "handoff_requested_at": conversation.handoff_requested_at,
        "messages": [_message_dict(message) for message in conversation.messages.all()],
    }


def _message_dict(message: Message) -> dict[str, Any]:
    # The reverse one-to-one raises when there is no feedback; getattr's default covers it.
    feedback = getattr(message, "feedback", None)
    return {
        "id": message.id,
        "role": message.role,
        "text": message.text,
        "created_at": message.created_at,
        "author": message.author.get_username() if message.author else None,
        "model_name": message.model_name,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "ttft_ms": message.ttft_ms,
        "total_ms": message.total_ms,
        "finish_reason": message.finish_reason,
        "is_fallback": message.is_fallback,
        "is_partial": message.is_partial,
        "feedback": {"rating": feedback.rating, "comment": feedback.comment} if feedback else None,
    }


def transcripts_json(conversations: QuerySet[Conversation]) -> Iterator[str]:
    """A JSON list of the conversations, in pieces: "[", the conversations separated by ",",
    "]". Non-ASCII text is kept readable, not \\u-escaped."""
    yield "["
    separator = "\n"
    for conversation in transcripts(conversations):
        yield separator + json.dumps(
            conversation, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2
        )
        separator = ",\n"
    yield "\n]\n"


def transcript_rows(conversations: QuerySet[Conversation]) -> Iterator[tuple[Any, ...]]:
    """One flat row per message, in `CSV_HEADER` order (conversations without messages
    have no row)."""
    for conversation in transcripts(conversations):
        head = tuple(conversation[name] for name in CONVERSATION_FIELDS)
        for message in conversation["messages"]:
            feedback = message["feedback"] or {"rating": "", "comment": ""}
            yield (
                *head,
                *(message[name] for name in MESSAGE_FIELDS),
                feedback["rating"],
                feedback["comment"],
            )


def transcripts_csv(conversations: QuerySet[Conversation]) -> Iterator[str]:
    """The rows as CSV text, a line at a time, starting with a UTF-8 byte order mark, safe for
    spreadsheets."""
    writer = csv.writer(_Echo())
    yield _UTF8_BOM + writer.writerow(CSV_HEADER)
    for row in transcript_rows(conversations):
        yield writer.writerow([spreadsheet_safe(_csv_value(value)) for value in row])


class _Echo:
    """A file for csv.writer whose write returns the line: writerow then returns it too."""

    def write(self, line: str) -> str:
        return line


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would evaluate as a formula, prefixed with ' so it shows as text."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value
