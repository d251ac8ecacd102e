"""The partial unique constraints under real concurrency: two connections, one waiting on the
other's uncommitted row. Only PostgreSQL runs this (SQLite serialises writers, so the race
cannot happen there); `scripts/test-postgres.sh` runs it."""

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import (
    IntegrityError,
    close_old_connections,
    connection,
    connections,
    transaction,
)

from chat import services
from chat.models import BotProfile, Message

pytestmark = [
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="PostgreSQL only: run scripts/test-postgres.sh",
    ),
    pytest.mark.django_db(transaction=True),
]


def wait_until_blocked_on_a_lock(timeout=15.0):
    """Until another backend of this database waits for a row or index lock."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.05)
    pytest.fail("the second connection never waited for the first one's lock")


def race(first, second):
    """`first` runs in a transaction that stays open until `second`, on another connection,
    blocks on its uncommitted row; then `first` commits. Returns both results (or errors)."""
    inserted, commit = threading.Event(), threading.Event()

    def hold():
        try:
            with transaction.atomic():
                result = first()
                inserted.set()
                assert commit.wait(30)
            return result
        finally:
            inserted.set()
            connections.close_all()  # this thread's connection, or the test DB cannot be dropped

    def then(fn):
        try:
            assert inserted.wait(30)
            return fn()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(hold)
        b = pool.submit(then, second)
        try:
            wait_until_blocked_on_a_lock()
        finally:
            commit.set()
        return a.result(timeout=30), b.exception(timeout=30) or b.result()


def test_two_connections_resending_one_client_id_store_it_once():
    conversation, _ = services.conversation_start()

    def add():
        return services.message_add_customer(conversation=conversation, text="hi", client_id="c1")

    (first, created), second = race(add, add)
    assert created
    # The second insert waited for the first, failed on the constraint, and found its row.
    assert second == (first, False)
    assert Message.objects.filter(conversation=conversation, client_id="c1").count() == 1


def test_two_connections_cannot_both_make_a_default_profile():
    BotProfile.objects.update(is_default=False)

    def make(name):
        return lambda: BotProfile.objects.create(name=name, is_default=True, system_prompt="p")

    first, second = race(make("a"), make("b"))
    assert first.is_default
    assert isinstance(second, IntegrityError) and "one_default_profile" in str(second)
    assert list(BotProfile.objects.filter(is_default=True)) == [first]


def test_request_threads_leave_no_connection_open_behind_them():
    """Daphne runs each HTTP view in a thread of its own. After 60 such requests no session
    of theirs is left (kept per thread, they ran the server out of connections under a burst
    of API requests)."""

    def request():
        BotProfile.objects.count()
        close_old_connections()  # what the end of every request does (request_finished)

    def sessions() -> set[int]:
        """The other sessions on the test database (earlier tests' database threads may
        still hold theirs: only those that appear during this test count)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return {pid for (pid,) in cursor.fetchall()}

    before = sessions()
    gc.disable()  # a kept connection must not be freed by chance before the count
    try:
        threads = [threading.Thread(target=request) for _ in range(60)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        left = sessions() - before
    finally:
        gc.enable()
    assert len(left) <= 1, left  # (the async ORM's thread may open one)
