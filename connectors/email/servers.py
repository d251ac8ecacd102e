"""The mail servers of an e-mail inbox, from its settings' URLs:

    imaps://user:pass@imap.example.com:993/INBOX   (TLS; imap:// uses STARTTLS where offered)
    smtps://user:pass@smtp.example.com:465         (TLS)
    smtp+starttls://user:pass@smtp.example.com:587 (STARTTLS, required)
    smtp://host:25                                 (plain: a relay on the same network)

A user name or password with reserved characters is percent-encoded (p%40ss for p@ss).
"""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

IMAP_SCHEMES = {"imaps": ("tls", 993), "imap": ("starttls-if-offered", 143)}
SMTP_SCHEMES = {"smtps": ("tls", 465), "smtp+starttls": ("starttls", 587), "smtp": ("plain", 25)}


@dataclass(frozen=True)
class Server:
    security: str  # "tls", "starttls", "starttls-if-offered" or "plain"
    host: str
    port: int
    user: str
    password: str
    folder: str = "INBOX"  # IMAP only

    def __repr__(self) -> str:  # never the password, whatever prints it
        return f"Server({self.security}, {self.user or '-'}@{self.host}:{self.port})"


class BadServerURL(ValueError):
    pass


def parse(url: str, schemes: dict[str, tuple[str, int]]) -> Server:
    parts = urlsplit(url.strip())
    if parts.scheme not in schemes:
        raise BadServerURL(f"the scheme must be one of {', '.join(sorted(schemes))}")
    if not parts.hostname:
        raise BadServerURL("no host")
    security, default_port = schemes[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise BadServerURL("the port is not a number") from None
    return Server(
        security=security,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        folder=unquote(parts.path.lstrip("/")) or "INBOX",
    )


def imap(url: str) -> Server:
    server = parse(url, IMAP_SCHEMES)
    if not server.user or not server.password:
        raise BadServerURL("the mailbox's user and password are needed: imaps://user:pass@host")
    return server


def smtp(url: str) -> Server:
    return parse(url, SMTP_SCHEMES)
