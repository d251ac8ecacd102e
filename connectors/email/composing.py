"""The e-mail the desk sends for one message of the bot's or an agent's: in the customer's
thread (In-Reply-To and References, "Re: " and the thread's subject), with the Message-ID the
outbox row chose, so a try repeated after a crash is the same mail to the customer's client."""

from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, formatdate

MAX_REFERENCES = 20  # the thread's newest ids: enough for every client to thread it


@dataclass(frozen=True)
class Outgoing:
    message_id: str
    from_address: str
    from_name: str
    to_address: str
    subject: str  # the thread's, as the customer wrote it
    in_reply_to: str  # "" when the desk writes first
    references: tuple[str, ...]
    text: str
    automatic: bool  # the bot's answer (Auto-Submitted: auto-replied), not a person's


def reply_subject(subject: str) -> str:
    subject = subject.strip() or "Your message"
    return subject if subject[:3].lower() in ("re:", "回复：", "回复:") else f"Re: {subject}"


def compose(out: Outgoing) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = (
        formataddr((out.from_name, out.from_address))
        if out.from_name
        else Address(addr_spec=out.from_address)
    )
    mail["To"] = out.to_address
    mail["Subject"] = reply_subject(out.subject)
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = out.message_id
    if out.in_reply_to:
        mail["In-Reply-To"] = out.in_reply_to
    references = list(dict.fromkeys(out.references))[-MAX_REFERENCES:]
    if references:
        mail["References"] = " ".join(references)
    if out.automatic:
        # RFC 3834: other auto-responders do not answer this, so two of them cannot loop.
        mail["Auto-Submitted"] = "auto-replied"
    mail.set_content(out.text)
    return mail
