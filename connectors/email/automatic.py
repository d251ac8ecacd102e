"""Mail no one should answer: auto-replies (out of office, "we got your mail"), lists and bulk
mail, bounces, and the desk's own mail coming back (a loop). Each is recorded as ignored and
never answered: answering an auto-responder is how two machines mail each other forever.

The signs (RFC 3834 and what mail servers really send): Auto-Submitted other than "no";
X-Autoreply, X-Autorespond, X-Auto-Response-Suppress; Precedence bulk, junk, list or
auto_reply; List-Id or List-Unsubscribe; a delivery report (multipart/report), mail from
MAILER-DAEMON or postmaster, or an empty Return-Path; a Message-ID the desk made, or our own
address as the sender.
"""

from connectors.email.kind import MESSAGE_ID_PREFIX, domain_of
from connectors.email.parsing import IncomingMail

AUTO_REPLY, BOUNCE, LOOP, EMPTY = "auto-reply", "bounce", "loop", "empty"
_BULK = {"bulk", "junk", "list", "auto_reply"}
_DAEMONS = ("mailer-daemon@", "postmaster@", "mail-daemon@")


def reason_to_ignore(mail: IncomingMail, *, own_address: str) -> str | None:
    """Why `mail` must not be answered, or None for a customer's mail."""
    h = mail.headers
    own_address = own_address.lower()
    own_id = f"@{domain_of(own_address)}>"
    if mail.sender == own_address or (
        mail.message_id.startswith("<" + MESSAGE_ID_PREFIX) and mail.message_id.endswith(own_id)
    ):
        return LOOP
    content_type = h.get_content_type()
    return_path = h.get("Return-Path")
    if (
        content_type == "multipart/report"
        or mail.sender.startswith(_DAEMONS)
        or (return_path is not None and str(return_path).strip() in ("<>", ""))
        or not mail.sender
    ):
        return BOUNCE
    auto_submitted = str(h.get("Auto-Submitted", "no")).strip().lower()
    if (
        not auto_submitted.startswith("no")
        or h.get("X-Autoreply") is not None
        or h.get("X-Autorespond") is not None
        or str(h.get("X-Auto-Response-Suppress", "")).strip().lower() in ("all", "oof")
        or str(h.get("Precedence", "")).strip().lower() in _BULK
        or h.get("List-Id") is not None
        or h.get("List-Unsubscribe") is not None
    ):
        return AUTO_REPLY
    if not mail.text.strip() and not mail.attachments:
        return EMPTY
    return None
