"""The e-mail kind of channel (connectors/kinds.py): a mailbox the desk reads over IMAP, and
the SMTP server it sends from."""

from email.utils import make_msgid

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from chat.models import Inbox
from connectors.email import servers
from connectors.email.sending import send
from connectors.kinds import Kind

# The left part of every Message-ID the desk makes: a mail carrying one of ours (with our
# domain) is our own coming back, never a customer's.
MESSAGE_ID_PREFIX = "desk."


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def new_message_id(settings: dict) -> str:
    return make_msgid(idstring=None, domain=domain_of(settings["address"])).replace(
        "<", "<" + MESSAGE_ID_PREFIX, 1
    )


def _check(settings: dict) -> list[str]:
    found = []
    try:
        validate_email(settings["address"])
    except ValidationError:
        found.append("address: not an e-mail address")
    for name, parse in (("imap_url", servers.imap), ("smtp_url", servers.smtp)):
        try:
            parse(settings[name])
        except servers.BadServerURL as exc:
            found.append(f"{name}: {exc}")
    return found


def _describe(inbox: Inbox, base_url: str) -> list[str]:
    imap = servers.imap(inbox.settings["imap_url"])
    smtp = servers.smtp(inbox.settings["smtp_url"])
    address = inbox.settings["address"]
    return [
        f"The desk reads the mailbox {imap.user}@{imap.host}:{imap.port} (folder {imap.folder})",
        f"and answers from {address} through {smtp.host}:{smtp.port}.",
        "On your side: let customers write to this address, or forward your support address",
        "to it; allow the desk's host to log in to the IMAP server and to send through the",
        f"SMTP server as {address}. Start `manage.py run_connectors` (make run does).",
        f"Customers write to (or your support address forwards to): {address}",
    ]


EMAIL = Kind(
    name="email",
    required=("address", "imap_url", "smtp_url"),
    secret_urls=("imap_url", "smtp_url"),
    check=_check,
    describe=_describe,
    new_outbound_id=new_message_id,
    send=send,
)
