"""`manage.py run_connectors` as a real process on the test database: with no inbox it waits
and says so once; an inbox added while it runs is read within its poll; a mail is answered
(by the fallback rules here: no inference worker is up, so the answer comes at once) through
real SMTP; SIGTERM stops it cleanly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from chat.models import Inbox
from tests.connectors.email.conftest import ADDRESS
from tests.connectors.email.helpers import customer_mail
from tests.webhooks.test_restart import database_url

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).parents[3]


def wait_for(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_the_process_waits_for_an_inbox_answers_its_mail_and_stops_on_sigterm(
    site, dovecot, smtp_server, tmp_path
):
    log = tmp_path / "connectors.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "CONNECTOR_POLL_SECONDS": "0.1",
        "CONNECTOR_IMAP_IDLE_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_connectors"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "no inbox is enabled" in log.read_text())
        Inbox.objects.create(
            site=site,
            kind="email",
            name="Support",
            settings={"address": ADDRESS, "imap_url": dovecot.url, "smtp_url": smtp_server.url},
        )
        wait_for(lambda: "reading mailbox" in log.read_text())
        dovecot.deliver(customer_mail(text="Is anyone there?", message_id="<p1@customer.test>"))
        wait_for(lambda: len(smtp_server.mails) == 1)
        assert smtp_server.mails[0]["In-Reply-To"] == "<p1@customer.test>"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    output = log.read_text()
    assert output.count("no inbox is enabled") == 1  # said once, not at every poll
    assert output.rstrip().endswith("connectors stopped")
    assert dovecot.password not in output
