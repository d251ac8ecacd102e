"""The signature on every webhook: HMAC-SHA256 with the endpoint's secret over
"{timestamp}.{body}", sent as `X-Desk-Signature: t=<unix seconds>,v1=<hex>` (Stripe's
scheme). The timestamp is signed with the body, so a receiver that refuses old timestamps
(REPLAY_WINDOW_SECONDS) cannot be fed a captured request again later.

`verify` is the reference a receiver follows (docs/webhooks.md has it in Python and
JavaScript); the desk only signs.
"""

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Desk-Signature"
EVENT_HEADER = "X-Desk-Event"
DELIVERY_HEADER = "X-Desk-Delivery"
# How old (or how far ahead, for clocks that differ) a signed timestamp may be when checked.
REPLAY_WINDOW_SECONDS = 300


def signature(secret: str, timestamp: int, body: str) -> str:
    message = f"{timestamp}.{body}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: str, *, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, t, body)}"


class InvalidSignature(Exception):
    pass


def verify(
    secret: str,
    body: str,
    header: str,
    *,
    now: float | None = None,
    tolerance: int = REPLAY_WINDOW_SECONDS,
) -> None:
    """Raise InvalidSignature unless `header` signs `body` with `secret` within the window."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        raise InvalidSignature("no timestamp") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the replay window")
    expected = signature(secret, timestamp, body)
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise InvalidSignature("signature mismatch")
