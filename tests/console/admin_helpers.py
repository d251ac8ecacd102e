"""Transcript rows, admin forms and streamed exports for the admin's tests."""

import pytest
from django.forms.models import model_to_dict

from chat.models import BotProfile, Conversation, Message


def conversation(**fields) -> Conversation:
    return Conversation.objects.create(token_hash="0" * 64, **fields)


def message(conv: Conversation, role: str, text: str, **fields) -> Message:
    return Message.objects.create(conversation=conv, role=role, text=text, **fields)


def downloaded(response) -> bytes:
    """The body of a streamed export. Daphne (ASGI) sends the async iterator as it comes;
    Django's test client reads it synchronously (and says so: filtered below)."""
    assert response.streaming and response.is_async
    return b"".join(response)


STREAMED = pytest.mark.filterwarnings(
    "ignore:StreamingHttpResponse must consume asynchronous iterators"
)


def bot_profile_form(**values) -> dict:
    """The admin form's POST for a new bot profile: every field at its default but these."""
    fields = model_to_dict(BotProfile(**values))
    fields.pop("id")
    # An unticked checkbox is absent from a POST.
    return {
        name: "on" if value is True else value
        for name, value in fields.items()
        if value is not False and value is not None
    }
