"""`{% action_call call %}`: one call of an action in the console's transcript
(templates/agents/_action_call.html), the same markup static/agents/src/transcript.js draws
live from an `action` frame, so a live update finds a stored call's line by its call id.

`call` is an `action` frame's dict (docs/protocol.md: call_id, name, status, text, arguments,
latency_ms, confirm_text; optionally reason and detail, for staff) or a
chat.actions.models.ActionCall (its id and action_name stand for call_id and name)."""

import json

from django import template

register = template.Library()

# As static/agents/src/transcript.js (CALL_STATUS) says them.
STATUS_LABELS = {
    "confirm_required": "waiting for the customer to confirm",
    "confirmed": "confirmed by the customer, calling",
    "cancelled": "cancelled by the customer",
    "ok": "ok",
    "error": "error",
    "timeout": "timed out",
    "bad_response": "bad response",
    "refused": "refused, not called",
}
FAILED = {"error", "timeout", "bad_response", "refused", "cancelled"}
SENT = {"ok", "error", "timeout", "bad_response"}  # these have a latency


def _plain(value) -> str:
    """Text, numbers and booleans as text (as JavaScript's String); anything else nothing."""
    if value is None or isinstance(value, dict | list | tuple):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def call_signature(name, arguments) -> str:
    """`order_status(order_id=A1001)`: strings as they are, other values as JSON."""
    items = arguments.items() if isinstance(arguments, dict) else ()
    shown = ", ".join(f"{key}={_argument(value)}" for key, value in items)
    return f"{_plain(name)}({shown})"


def _argument(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@register.inclusion_tag("agents/_action_call.html")
def action_call(call) -> dict:
    if isinstance(call, dict):
        get = call.get
    else:

        def get(key, default=None):
            return getattr(call, key, default)

    call_id = get("call_id")
    if call_id is None:
        call_id = get("pk")
    status = _plain(get("status"))
    latency = get("latency_ms")
    return {
        "call": {
            "call_id": _plain(call_id),
            "signature": call_signature(get("name") or get("action_name"), get("arguments")),
            "status": status,
            "status_label": STATUS_LABELS.get(status, status),
            "kind": "failed" if status in FAILED else "ok" if status == "ok" else "pending",
            "reason": _plain(get("reason")),
            "latency_ms": (
                latency
                if status in SENT
                and isinstance(latency, int | float)
                and not isinstance(latency, bool)
                else None
            ),
            "confirm_text": _plain(get("confirm_text")),
            "text": _plain(get("text")),
            "detail": _plain(get("detail")),
        }
    }
