"""An e-mail as the desk reads it: who wrote, the thread it answers, the text the customer
wrote this time (HTML-only mail read as text; quoted history and signature cut,
connectors/email/quotes.py), and the attachments it listed (kept as names, types and sizes;
the files themselves are not stored)."""

import hashlib
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr

import html2text

from connectors.email.quotes import latest_reply

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
MAX_TEXT_CHARS = 8000  # as an agent's reply: a customer's mail is not a document store


@dataclass(frozen=True)
class Attachment:
    name: str
    type: str
    size: int


@dataclass(frozen=True)
class IncomingMail:
    message_id: str  # "<…>"; made from the bytes' hash when the mail has none
    sender: str  # the address, lower case
    sender_name: str
    subject: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    text: str  # what the customer wrote this time
    attachments: tuple[Attachment, ...] = ()
    headers: EmailMessage = field(repr=False, default=None)

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """The Message-IDs this mail answers, the nearest first."""
        return tuple(dict.fromkeys((*self.in_reply_to, *reversed(self.references))))


def message_ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MESSAGE_ID.findall(str(value or "")))


def parse(raw: bytes) -> IncomingMail:
    mail = message_from_bytes(raw, policy=policy.default)
    own_id = message_ids(mail.get("Message-ID"))
    name, address = parseaddr(str(mail.get("From", "")))
    return IncomingMail(
        message_id=own_id[0] if own_id else f"<sha256.{hashlib.sha256(raw).hexdigest()}@local>",
        sender=address.strip().lower(),
        sender_name=name.strip(),
        subject=" ".join(str(mail.get("Subject", "")).split())[:500],
        in_reply_to=message_ids(mail.get("In-Reply-To")),
        references=message_ids(mail.get("References")),
        text=latest_reply(body_text(mail))[:MAX_TEXT_CHARS],
        attachments=tuple(_attachments(mail)),
        headers=mail,
    )


def body_text(mail: EmailMessage) -> str:
    """The plain-text body, or the HTML one as text when the mail has no plain part."""
    body = mail.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    try:
        content = body.get_content()
    except (LookupError, UnicodeError):  # an unknown charset: read what can be read
        content = body.get_payload(decode=True).decode("utf-8", errors="replace")
    if body.get_content_type() == "text/html":
        converter = html2text.HTML2Text()
        converter.body_width = 0  # no hard wraps: the text is read, not printed
        converter.ignore_images = True
        converter.ignore_emphasis = True
        content = converter.handle(content)
    return content


def _attachments(mail: EmailMessage):
    for part in mail.iter_attachments():
        payload = part.get_payload(decode=True) or b""
        yield Attachment(
            name=(part.get_filename() or "(unnamed)")[:200],
            type=part.get_content_type(),
            size=len(payload),
        )


def recipients(mail: EmailMessage) -> list[str]:
    fields = [str(value) for name in ("To", "Cc") for value in mail.get_all(name, [])]
    return [address.lower() for _, address in getaddresses(fields) if address]
