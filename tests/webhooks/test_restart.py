"""`manage.py run_webhooks` as a real process on the test database: killed outright during a
receiver's outage, with the desk writing on meanwhile, and started again; the receiver gets
every event once, in order per conversation, signed."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from chat import services
from chat.models import Conversation
from tests.webhooks.helpers import Receiver, free_port, verified
from tests.webhooks.test_delivery import chat
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).parents[2]


def database_url(db: dict) -> str:
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_process(log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "WEBHOOK_BACKOFF_BASE_SECONDS": "0.1",
        "WEBHOOK_BACKOFF_MAX_SECONDS": "0.5",
        "WEBHOOK_POLL_SECONDS": "0.1",
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "WEBHOOK_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_webhooks"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_for(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_killed_and_restarted_the_process_delivers_each_event_once_in_order(
    endpoint, site, tmp_path
):
    recovered = threading.Event()
    # Three deliveries get through; then the receiver fails until it recovers.
    receiver = Receiver(
        free_port(), answer=lambda n: 200 if n < 3 or recovered.is_set() else 500
    ).start()
    endpoint.url = receiver.url
    endpoint.save()
    chat(site, conversations=2, messages=2)
    first = start_process(tmp_path / "first.log")
    second = None
    try:
        # Killed once the three are on record and the outage is under way (a process killed
        # between a receiver's 2xx and its record would send that event again, by design:
        # at least once, with the same ids).
        wait_for(
            lambda: (
                len(receiver.hits) > 4
                and WebhookDelivery.objects.filter(status="delivered").count() == 3
            )
        )
        first.kill()  # no clean shutdown: a crash
        first.wait(10)
        assert len(receiver.accepted()) == 3
        # The desk goes on while nothing delivers: its events wait in the outbox.
        for conversation in Conversation.objects.filter(site=site):
            services.conversation_close(conversation=conversation, closed_by="The customer")
        recovered.set()
        second = start_process(tmp_path / "second.log")
        wait_for(lambda: not WebhookDelivery.objects.exclude(status="delivered").exists())
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
        assert "webhook delivery stopped" in (tmp_path / "second.log").read_text()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        receiver.stop()

    rows = list(WebhookDelivery.objects.order_by("id"))
    assert len(rows) == 8  # 2 x (created, 2 messages, closed)
    accepted = [verified(hit, endpoint.secret) for hit in receiver.accepted()]
    assert sorted(event["id"] for event in accepted) == sorted(row.event_id for row in rows)
    assert len({event["id"] for event in accepted}) == len(rows)  # none twice
    for conversation_id in {row.conversation_id for row in rows}:
        in_order = [row.event_id for row in rows if row.conversation_id == conversation_id]
        got = [event["id"] for event in accepted if event["conversation_id"] == conversation_id]
        assert got == in_order
        assert [
            event["type"] for event in accepted if event["conversation_id"] == conversation_id
        ] == [
            "conversation.created",
            "message.customer",
            "message.customer",
            "conversation.closed",
        ]
