"""The API's limits hold across processes: two Daphne processes on one Redis and one database,
requests alternating between them. A key's requests a minute are counted once for both, and so
are a client address's failed authentications. `GET /v1/models` needs no inference worker."""

import io
import os
import sys
import threading

import httpx
import pytest

from chat.api import keys
from devstack.localredis import start_redis
from devstack.stack import ReadyCheck, Supervisor, wait_ready
from tests.e2e.conftest import ROOT, database_url, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FAILED_AUTH_LIMIT = 3


@pytest.fixture(scope="module")
def two_daphnes(django_db_setup, django_db_blocker, tmp_path_factory):
    from django.db import connection

    run_dir = tmp_path_factory.mktemp("api-limits")
    redis = start_redis(run_dir)
    with django_db_blocker.unblock():
        db_url = database_url(connection.settings_dict)
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "DATABASE_URL": db_url,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
        "API_FAILED_AUTH_LIMIT": f"{FAILED_AUTH_LIMIT}/minute",
        # The test stands for a proxy in front: each test's client gets an address of its
        # own (X-Forwarded-For), so one test's failures do not refuse another's requests.
        "TRUSTED_PROXIES": "127.0.0.1",
    }
    output = io.StringIO()
    sup = Supervisor(out=output, stop_timeout=10)
    ports = [free_port(), free_port()]
    for index, port in enumerate(ports, 1):
        address = ["-b", "127.0.0.1", "-p", str(port)]
        command = [sys.executable, "-m", "daphne", *address, "cs_site.asgi:application"]
        sup.start(f"daphne{index}", command, env, cwd=ROOT)
    try:
        checks = [
            ReadyCheck(f"daphne{i}", f"http://127.0.0.1:{p}/healthz")
            for i, p in enumerate(ports, 1)
        ]
        wait_ready(sup, checks, threading.Event(), timeout=60)
    except RuntimeError as exc:
        sup.stop_all()
        redis.stop()
        pytest.fail(f"the two Daphnes did not start: {exc}\n{output.getvalue()[-5000:]}")
    yield [f"http://127.0.0.1:{port}" for port in ports]
    sup.stop_all()
    redis.stop()


def models(base: str, secret: str, ip: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}", "X-Forwarded-For": ip}
    return httpx.get(f"{base}/v1/models", headers=headers, timeout=10)


def test_requests_a_minute_are_counted_once_for_both_processes(two_daphnes):
    _, secret = keys.create_api_key(name="e2e", scopes=["openai"], requests_per_minute=4)

    answers = [models(two_daphnes[i % 2], secret, "198.51.100.20") for i in range(5)]

    assert [r.status_code for r in answers] == [200, 200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["3", "2", "1", "0", "0"]
    assert all(r.headers["X-RateLimit-Limit"] == "4" for r in answers)
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["type"] == "rate_limit_error"  # OpenAI's shape on /v1/
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Reset"] == refused.headers["Retry-After"]


def test_failed_authentications_are_counted_once_for_both_processes(two_daphnes):
    _, secret = keys.create_api_key(name="e2e", scopes=["openai"], requests_per_minute=0)
    guesser = "198.51.100.21"

    wrong = [models(two_daphnes[i % 2], f"csk_guess{i}", guesser) for i in range(3)]
    assert [r.status_code for r in wrong] == [401] * FAILED_AUTH_LIMIT
    # The right key from the same address is refused on either process, for now.
    for base in two_daphnes:
        refused = models(base, secret, guesser)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
    assert models(two_daphnes[0], secret, "198.51.100.22").status_code == 200
