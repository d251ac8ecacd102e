"""The sample shop's order API (auth, ownership, cancel rules, off by default), and the sample
actions calling it on a real Daphne serving the desk, as `make run` serves it."""

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import AsyncClient

from chat.actions import calling, selectors, services
from chat.actions.models import Action, ActionCall
from chat.actions.sample_shop import orders
from chat.models import Conversation

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-shop-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def shop_on(actions_settings):
    actions_settings(SAMPLE_SHOP=True, SAMPLE_SHOP_TOKEN=TOKEN)


async def get(path: str, headers: dict | None = None):
    return await AsyncClient().get(
        f"/sample-shop/api/{path}", headers=AUTH if headers is None else headers
    )


async def post(path: str, headers: dict | None = None):
    return await AsyncClient().post(
        f"/sample-shop/api/{path}", headers=AUTH if headers is None else headers
    )


# --- the API ------------------------------------------------------------------------------------------


async def test_the_shop_is_off_unless_turned_on(actions_settings):
    actions_settings(SAMPLE_SHOP=False, SAMPLE_SHOP_TOKEN=TOKEN)
    response = await get("orders/A1001?customer=c-1001")
    assert response.status_code == 404
    assert response.json()["error"] == "off"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
async def test_every_request_needs_the_bearer_token(shop_on, headers):
    response = await get("orders/A1001?customer=c-1001", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert (await post("orders/A1002/cancel?customer=c-1001", headers=headers)).status_code == 401


async def test_a_customer_reads_an_own_order(shop_on):
    response = await get("orders/a1001?customer=c-1001")
    assert response.status_code == 200
    body = response.json()
    assert (body["order_id"], body["status"], body["carrier"]) == ("A1001", "shipped", "PostNL")
    assert body["status_text"].startswith("shipped with PostNL on ")
    assert "email" not in body and "customer_id" not in body


async def test_by_e_mail_address_too(shop_on):
    response = await get("orders/A1003?email=Ben@Example.com")
    assert (response.status_code, response.json()["status"]) == (200, "delivered")


@pytest.mark.parametrize(
    "query",
    [
        "orders/A1001?customer=c-1002",  # another customer's order
        "orders/A1001?email=ben@example.com",
        "orders/A1001?customer=c-1001&email=ben@example.com",  # both must fit
        "orders/A9999?customer=c-1001",  # no such order: the same answer
    ],
)
async def test_an_order_that_is_not_yours_looks_like_no_order(shop_on, query):
    response = await get(query)
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "message": "No order with this number for this customer.",
    }


async def test_a_lookup_without_customer_or_e_mail_is_refused(shop_on):
    assert (await get("orders/A1001")).status_code == 400


async def test_the_latest_order_is_the_customers_most_recently_placed(shop_on):
    response = await get("latest-order?customer=c-1001")
    assert response.status_code == 200
    body = response.json()
    assert body["order_id"] == "A1002" and body["status_text_zh"].startswith("正在仓库备货")
    assert (await get("latest-order?customer=c-9999")).status_code == 404
    assert (await get("latest-order?email=ada@example.com")).status_code == 400


async def test_cancelling_works_once_and_only_before_shipping(shop_on):
    first = await post("orders/A1002/cancel?customer=c-1001")
    assert (first.status_code, first.json()["status"]) == (200, "cancelled")
    again = await post("orders/A1002/cancel?customer=c-1001")
    assert (again.status_code, again.json()["error"]) == (409, "not_cancellable")
    assert "is cancelled" in again.json()["message"]
    after = await get("orders/A1002?customer=c-1001")
    assert after.json()["status"] == "cancelled"
    shipped = await post("orders/A1001/cancel?customer=c-1001")
    assert shipped.status_code == 409 and "is shipped" in shipped.json()["message"]


async def test_only_the_orders_customer_cancels_it(shop_on):
    assert (await post("orders/A1006/cancel?customer=c-1001")).status_code == 404
    assert (await post("orders/A1006/cancel?email=chen@example.com")).status_code == 400
    assert (await get("orders/A1006?customer=c-1003")).json()["status"] == "processing"
    assert (
        await AsyncClient().get("/sample-shop/api/orders/A1006/cancel", headers=AUTH)
    ).status_code == 405


async def test_a_cancellation_is_seen_by_every_process(shop_on, redis_server):
    # The state lives in Redis: what another process wrote is what this one reads.
    import redis

    other = redis.Redis.from_url(redis_server.url)
    other.hset(orders.CANCELLED_KEY, "A1006", "elsewhere")
    other.close()
    assert (await get("orders/A1006?customer=c-1003")).json()["status"] == "cancelled"


# --- the sample actions on a real Daphne -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def desk(redis_server, tmp_path_factory):
    """Daphne serving the desk with the sample shop on, on the test's Redis."""
    var = tmp_path_factory.mktemp("desk")
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "cs_site.settings",
        "VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var / 'desk.sqlite3'}",
        "REDIS_URL": redis_server.url,
        "ACTIONS_SAMPLE_SHOP": "true",
        "SAMPLE_SHOP_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    log = (var / "daphne.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "cs_site.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            assert process.poll() is None, (var / "daphne.log").read_text()
            assert time.monotonic() < deadline, (var / "daphne.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture
def sample_actions(desk, actions_settings, monkeypatch):
    actions_settings(SAMPLE_BASE_URL=desk, SAMPLE_SHOP=False)
    monkeypatch.setenv("SAMPLE_SHOP_TOKEN", TOKEN)  # what the desk's operator sets
    call_command("import_actions", "--sample", stdout=io.StringIO())
    return {a.name: a for a in selectors.sample_actions()}


@pytest.mark.django_db(transaction=True)
async def test_the_sample_actions_look_up_orders_on_the_desk_itself(sample_actions):
    status = sample_actions["order_status"]
    mine = await calling.call(status, {"order_id": "A1001"}, customer_id="c-1001")
    assert mine.status == "ok", mine
    assert mine.text.startswith("Order A1001: shipped with PostNL on ")
    not_mine = await calling.call(status, {"order_id": "A1001"}, customer_id="c-1002")
    assert (not_mine.status, not_mine.reason) == ("error", "http_404")
    by_email = await calling.call(
        sample_actions["order_status_by_email"],
        {"order_id": "A1003", "email": "ben@example.com"},
        customer_id=None,
    )
    assert by_email.text.startswith("Order A1003: delivered on ")
    bad_email = await calling.call(
        sample_actions["order_status_by_email"],
        {"order_id": "A1003", "email": "ben"},
        customer_id=None,
    )
    assert bad_email.reason == "invalid_arguments"
    # The latest order needs no number; a Chinese conversation reads the Chinese result.
    latest = sample_actions["latest_order"]
    ada = await calling.call(latest, {}, customer_id="c-1001", language="zh-CN")
    assert ada.status == "ok" and ada.text.startswith("您最近的订单 A1002：正在仓库备货")
    ben = await calling.call(latest, {}, customer_id="c-1002")
    assert ben.text.startswith("Your most recent order, A1003: delivered on ")


@pytest.mark.django_db(transaction=True)
async def test_cancelling_a_sample_order_after_confirmation(sample_actions):
    from runtime.aio import db

    cancel = sample_actions["cancel_order"]
    conversation = await db(Conversation.objects.create)(token_hash="z" * 64)
    call = await db(services.call_record)(
        conversation_id=conversation.pk, action=cancel, arguments={"order_id": "A1002"}
    )
    assert call.status == ActionCall.Status.CONFIRM_REQUIRED
    assert await db(services.call_confirm)(call_id=call.pk, conversation_id=conversation.pk)
    outcome = await calling.call(cancel, call.arguments, customer_id="c-1001")
    assert outcome.text.startswith("Order A1002: cancelled; any payment is refunded")
    assert await db(services.call_finish)(call_id=call.pk, outcome=outcome)
    again = await calling.call(cancel, {"order_id": "A1002"}, customer_id="c-1001")
    assert (again.status, again.reason) == ("error", "http_409")
    shipped = await calling.call(cancel, {"order_id": "A1001"}, customer_id="c-1001")
    assert shipped.reason == "http_409"


@pytest.mark.django_db(transaction=True)
async def test_a_wrong_token_in_the_environment_is_an_error_not_a_result(
    sample_actions, monkeypatch
):
    monkeypatch.setenv("SAMPLE_SHOP_TOKEN", "not-the-token")
    outcome = await calling.call(
        sample_actions["order_status"], {"order_id": "A1001"}, customer_id="c-1001"
    )
    assert (outcome.status, outcome.http_status) == ("error", 401)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("message", "picked"),
    [
        (
            "Where is my order A1001?",
            [("order_status", "A1001"), ("order_status_by_email", "A1001")],
        ),
        ("我的订单A1001到哪了？", [("order_status", "A1001"), ("order_status_by_email", "A1001")]),
        ("where's a1003", [("order_status", "a1003"), ("order_status_by_email", "a1003")]),
        (
            "Please cancel my order A1002",
            [
                ("cancel_order", "A1002"),
                ("order_status", "A1002"),
                ("order_status_by_email", "A1002"),
            ],
        ),
        (
            "帮我取消订单A1002",
            [
                ("cancel_order", "A1002"),
                ("order_status", "A1002"),
                ("order_status_by_email", "A1002"),
            ],
        ),
        (
            "A1002 — can you cancel it?",
            [
                ("cancel_order", "A1002"),
                ("order_status", "A1002"),
                ("order_status_by_email", "A1002"),
            ],
        ),
        ("My order number is A10011", []),  # five digits: no order number of this shop
        ("Do you ship to Austria?", []),
    ],
)
def test_the_sample_triggers_pick_the_order_in_either_language(message, picked):
    from chat.actions.triggers import matching_triggers

    call_command("import_actions", "--sample", stdout=io.StringIO())
    actions = list(Action.objects.filter(is_sample=True).order_by("name"))
    found = [
        (action.name, arguments["order_id"])
        for action, arguments in matching_triggers(actions, message)
    ]
    assert found == picked
