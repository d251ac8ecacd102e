"""Sending one composed e-mail through the inbox's SMTP server (blocking: run in a thread)."""

import smtplib
import ssl
from email.message import EmailMessage

from connectors.email.servers import Server


def send(server: Server, mail: EmailMessage, *, timeout: float) -> None:
    """Raises OSError or smtplib.SMTPException when the server does not take it."""
    context = ssl.create_default_context()
    if server.security == "tls":
        client = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, timeout=timeout)
    with client:
        client.ehlo()
        if server.security == "starttls":
            client.starttls(context=context)
            client.ehlo()
        if server.user:
            client.login(server.user, server.password)
        client.send_message(mail)
