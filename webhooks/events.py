"""Every webhook event body, built in one place (documented in docs/protocol.md, "Webhooks").

A body is an envelope, the same for every event, around the event's `data`:

    {"id": "evt_…", "type": "message.customer", "created": "2026-…Z",
     "conversation_id": "…", "data": {...}}

`id` names the event: each endpoint's copy, every retry and a redelivery carry the same one,
so a receiver drops repeats by it. Only what the company needs goes out: never a prompt,
a token, a secret or an agent's e-mail address.
"""

import json
import uuid
from datetime import datetime
from typing import Any, TypedDict

from django.utils import timezone

# Every event the desk sends, in the order of a conversation's life.
EVENTS = (
    "conversation.created",
    "message.customer",
    "message.bot",
    "message.agent",
    "handoff.requested",
    "agent.joined",
    "conversation.closed",
    "conversation.rated",
    "action.called",
)


class Envelope(TypedDict):
    id: str
    type: str
    created: str
    conversation_id: str
    data: dict[str, Any]


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _conversation(conversation, **_) -> dict:
    return {
        "channel": conversation.channel,
        "language": conversation.language,
        "region": conversation.region,
        "page_url": conversation.page_url,
        "customer_id": conversation.customer_id,
    }


def _message(message, **_) -> dict:
    body = {
        "message_id": message.pk,
        "role": message.role,
        "text": message.text,
        "created": _when(message.created_at),
    }
    if message.role == "bot":
        body.update(
            finish_reason=message.finish_reason,
            partial=message.is_partial,
            fallback=message.is_fallback,
        )
    return body


def _handoff(subject: str = "", **_) -> dict:
    return {"ticket_subject": subject}


def _agent(agent, **_) -> dict:
    return {"agent_name": agent.get_full_name() or agent.get_username()}


def _closed(closed_by: str, **_) -> dict:
    return {"closed_by": closed_by}


def _rated(feedback=None, conversation=None, **_) -> dict:
    if feedback is not None:  # one answer rated
        return {
            "kind": "answer",
            "message_id": feedback.message_id,
            "rating": feedback.rating,
            "comment": feedback.comment,
        }
    return {  # the whole conversation (CSAT)
        "kind": "conversation",
        "score": conversation.csat_score,
        "comment": conversation.csat_comment,
    }


def _action(call, **_) -> dict:
    # The validated arguments only: the call's headers and secrets are never stored at all.
    return {
        "call_id": call.pk,
        "action": call.action_name,
        "arguments": call.arguments,
        "status": call.status,
        "http_status": call.http_status,
        "latency_ms": call.latency_ms,
        "proposed_by": call.proposed_by,
    }


_DATA = {
    "conversation.created": _conversation,
    "message.customer": _message,
    "message.bot": _message,
    "message.agent": _message,
    "handoff.requested": _handoff,
    "agent.joined": _agent,
    "conversation.closed": _closed,
    "conversation.rated": _rated,
    "action.called": _action,
}
assert set(_DATA) == set(EVENTS)


def envelope(event: str, *, conversation_id, **objects) -> Envelope:
    """The body of `event`, from the objects the service sent with it (chat.hooks.emit)."""
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": event,
        "created": _when(timezone.now()),
        "conversation_id": str(conversation_id),
        "data": _DATA[event](**objects),
    }


def encode(body: Envelope) -> str:
    """The exact text that is signed and sent (compact, UTF-8 as is)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
