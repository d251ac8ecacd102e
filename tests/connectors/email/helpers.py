"""Real mail servers on localhost for the e-mail tests: Debian's dovecot (IMAP, with IDLE)
run from a temporary directory with its own configuration, a passwd-file user and a Maildir;
and aiosmtpd, keeping every mail the desk sends."""

import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dovecot:
    """An IMAP server on a free port with one user whose password is `password`."""

    def __init__(self, user: str = "desk", password: str = "mail-pass") -> None:
        self.user, self.password = user, password
        self.port = free_port()
        # Not under pytest's private tmp: dovecot's own users must read its configuration.
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-"))
        os.chmod(self.root, 0o755)
        self.process: subprocess.Popen | None = None

    def _config(self) -> Path:
        root = self.root
        if os.getuid() == 0:  # mail is never accessed as root: as dovecot's own user
            owner = pwd.getpwnam("dovecot")
            uid, gid, login, internal = owner.pw_uid, owner.pw_gid, "dovenull", "dovecot"
        else:
            me = pwd.getpwuid(os.getuid())
            uid, gid, login, internal = me.pw_uid, me.pw_gid, me.pw_name, me.pw_name
        home = root / "home" / self.user
        home.mkdir(parents=True)
        for path in (root / "home", home):
            os.chown(path, uid, gid)
        (root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        config = root / "dovecot.conf"
        config.write_text(
            f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login}
default_internal_user = {internal}
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
        )
        return config

    def start(self) -> "Dovecot":
        config = (
            self._config()
            if not (self.root / "dovecot.conf").exists()
            else self.root / "dovecot.conf"
        )
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dovecot did not start: {self.process.stderr.read().decode()[-2000:]}"
                        f"{self.log()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text()[-3000:] if path.exists() else ""

    @property
    def url(self) -> str:
        return f"imap://{self.user}:{self.password}@127.0.0.1:{self.port}/INBOX"

    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(self.user, self.password)
        client.select("INBOX")
        return client

    def deliver(self, mail: EmailMessage | bytes) -> None:
        """Put a mail in the mailbox, unread, as a mail server delivering it would."""
        raw = mail if isinstance(mail, bytes) else bytes(mail)
        client = self.client()
        try:
            client.append("INBOX", "", None, raw)
        finally:
            client.logout()

    def unseen(self) -> int:
        client = self.client()
        try:
            _, data = client.search(None, "UNSEEN")
            return len(data[0].split())
        finally:
            client.logout()


@dataclass
class Sink:
    """An SMTP server that keeps every mail it is sent."""

    mails: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        self.mails.append(message_from_bytes(envelope.content, policy=policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


class SmtpServer:
    def __init__(self) -> None:
        self.sink = Sink()
        self.port = free_port()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    def start(self) -> "SmtpServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def mails(self) -> list[EmailMessage]:
        return self.sink.mails


def customer_mail(
    *,
    text: str,
    subject: str = "Where is my order?",
    sender: str = "Mia Chen <mia@customer.test>",
    to: str = "support@shop.test",
    message_id: str | None = None,
    in_reply_to: str = "",
    references: str = "",
    **headers: str,
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = message_id or f"<{time.monotonic_ns()}.{os.getpid()}@customer.test>"
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
    if references:
        mail["References"] = references
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(text)
    return mail
