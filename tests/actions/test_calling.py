"""`calling.call` against a real HTTP server in the test: what is sent (URL, headers, body), and
each way a call ends (ok, HTTP errors, too slow, not JSON, too large, a redirect elsewhere,
a missing field), refusals before anything is sent, metrics, and log lines without secrets."""

import json
import logging
import time

import pytest

from chat.actions import calling
from chat.actions.models import Action
from tests.actions.helpers import make_action
from tests.waiting import sample

SECRET = "tok_9f8e7d6c5b4a39281706"


def action_on(back_end, path: str = "/orders/{order_id}", **fields) -> Action:
    query = "?customer={customer.id}"
    return make_action(url=f"{back_end.url}{path}{query}", **fields)


def calls(action: str, outcome: str) -> float:
    return sample("cs_chat_action_calls_total", action=action, outcome=outcome)


async def test_a_call_renders_the_result_from_the_answer(back_end):
    outcome = await calling.call(action_on(back_end), {"order_id": "A1001"}, customer_id="c-1")
    assert outcome.status == "ok"
    assert outcome.http_status == 200
    assert outcome.fields == {"order_id": "A1001", "status": "shipped"}
    assert outcome.text == "Order A1001: shipped"
    assert outcome.customer_text("en") == "Order A1001: shipped"
    assert 0 <= outcome.latency_ms < 2000
    [seen] = back_end.seen
    assert (seen.method, seen.path, seen.query) == ("GET", "/orders/A1001", {"customer": ["c-1"]})
    assert seen.body == b""  # GET: the arguments travel in the URL only
    assert seen.headers["Accept"] == "application/json"


async def test_headers_carry_the_secret_from_the_environment(back_end, monkeypatch):
    monkeypatch.setenv("SHOP_API_TOKEN", SECRET)
    action = action_on(back_end, headers={"Authorization": "Bearer ${SHOP_API_TOKEN}"})
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert outcome.ok
    assert back_end.seen[0].headers["Authorization"] == f"Bearer {SECRET}"


async def test_a_missing_variable_refuses_before_anything_is_sent(back_end, monkeypatch):
    monkeypatch.delenv("SHOP_API_TOKEN", raising=False)
    action = action_on(back_end, headers={"Authorization": "Bearer ${SHOP_API_TOKEN}"})
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason) == ("refused", "missing_secret")
    assert "SHOP_API_TOKEN" in outcome.detail
    assert back_end.seen == []


async def test_other_methods_send_only_the_validated_arguments_as_json(back_end):
    action = action_on(
        back_end,
        path="/echo/{order_id}",
        method=Action.Method.POST,
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "reason": {"type": "string"}},
            "required": ["order_id"],
        },
        result="{method} {status}",
    )
    outcome = await calling.call(
        action,
        {"order_id": "A1002", "reason": "too late", "customer": "someone-else", "admin": True},
        customer_id="c-1",
    )
    assert outcome.text == "POST echoed"
    [seen] = back_end.seen
    assert json.loads(seen.body) == {"order_id": "A1002", "reason": "too late"}
    assert seen.headers["Content-Type"] == "application/json"


async def test_hostile_values_reach_the_back_end_as_one_path_segment(back_end):
    action = action_on(
        back_end,
        path="/echo/{order_id}",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
        result="{status}",
    )
    outcome = await calling.call(action, {"order_id": "../admin?x=1#"}, customer_id="c-1")
    assert outcome.ok
    [seen] = back_end.seen
    assert seen.raw_path == "/echo/..%2Fadmin%3Fx%3D1%23?customer=c-1"


# --- refused before sending -----------------------------------------------------------------------


async def test_arguments_the_schema_refuses_are_listed(back_end):
    outcome = await calling.call(action_on(back_end), {"order_id": "1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason) == ("refused", "invalid_arguments")
    assert outcome.detail == "order_id: '1001' does not match '^A[0-9]{4}$'"
    assert "check them" in outcome.customer_text("en")
    missing = await calling.call(action_on(back_end), {}, customer_id="c-1")
    assert missing.detail == "arguments: 'order_id' is a required property"
    not_an_object = await calling.call(action_on(back_end), ["A1001"], customer_id="c-1")
    assert not_an_object.reason == "invalid_arguments"
    assert back_end.seen == []


async def test_a_verified_action_needs_a_customer_id(back_end):
    outcome = await calling.call(action_on(back_end), {"order_id": "A1001"}, customer_id=None)
    assert (outcome.status, outcome.reason) == ("refused", "not_verified")
    assert outcome.customer_text("zh") == "请先在我们的网站登录，我才能查询您的账户信息。"
    assert back_end.seen == []


async def test_a_public_action_is_called_without_one(back_end):
    action = make_action(url=f"{back_end.url}/orders/{{order_id}}", audience=Action.Audience.PUBLIC)
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id=None)
    assert outcome.ok


async def test_a_disabled_action_is_not_called(back_end):
    outcome = await calling.call(
        action_on(back_end, enabled=False), {"order_id": "A1001"}, customer_id="c-1"
    )
    assert (outcome.status, outcome.reason) == ("refused", "disabled")
    assert back_end.seen == []


async def test_a_host_outside_the_allow_list_is_not_called(back_end, actions_settings):
    actions_settings(ALLOWED_HOSTS=["api.example.com"])
    outcome = await calling.call(action_on(back_end), {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason) == ("refused", "host_not_allowed")
    assert back_end.seen == []
    actions_settings(ALLOWED_HOSTS=[back_end.netloc])
    assert (await calling.call(action_on(back_end), {"order_id": "A1001"}, customer_id="c")).ok


# --- how a sent call can fail -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "sentence"),
    [
        (500, "http_500", "Our system couldn't complete that just now."),
        (404, "http_404", "I couldn't find anything matching those details."),
        (409, "http_409", "Our system did not accept this change"),
        (401, "http_401", "Our system couldn't complete that just now."),
    ],
)
async def test_an_http_error_is_an_error_with_an_honest_sentence(back_end, code, reason, sentence):
    action = action_on(back_end, path=f"/status/{code}/{{order_id}}")
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason, outcome.http_status) == ("error", reason, code)
    assert outcome.text == ""
    assert outcome.customer_text("en").startswith(sentence)


async def test_a_slow_back_end_times_out_within_the_action_timeout(back_end):
    action = action_on(back_end, path="/slow/{order_id}", timeout_seconds=0.5)
    started = time.monotonic()
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    took = time.monotonic() - started
    assert (outcome.status, outcome.reason) == ("timeout", "timeout")
    assert 0.45 <= took < 2.0
    assert outcome.customer_text("en").startswith("Our system took too long to answer")


async def test_an_answer_that_is_not_json_is_a_bad_response(back_end):
    action = action_on(back_end, path="/text/{order_id}")
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason, outcome.http_status) == (
        "bad_response",
        "not_json",
        200,
    )


@pytest.mark.parametrize("path", ["/big/{order_id}", "/stream-big/{order_id}"])
async def test_an_oversized_answer_is_a_bad_response(back_end, actions_settings, path):
    actions_settings(MAX_RESPONSE_BYTES=10_000)
    outcome = await calling.call(
        action_on(back_end, path=path), {"order_id": "A1001"}, customer_id="c"
    )
    assert (outcome.status, outcome.reason) == ("bad_response", "too_large")
    assert "10000 bytes" in outcome.detail


async def test_a_missing_field_is_a_bad_response_not_a_sentence_with_a_hole(back_end):
    action = action_on(back_end, path="/partial/{order_id}")
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason) == ("bad_response", "missing_field")
    assert outcome.detail == "the response has no status"
    assert outcome.text == ""


async def test_a_redirect_to_another_host_is_never_followed(back_end, other_host):
    target = f"{other_host.url}/orders/A1001"
    action = make_action(
        url=f"{back_end.url}/redirect/{{order_id}}?to={target}&customer={{customer.id}}"
    )
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason, outcome.http_status) == ("error", "redirect", 302)
    assert len(back_end.seen) == 1
    assert other_host.seen == []


async def test_a_redirect_on_the_same_host_is_not_followed_either(back_end):
    action = make_action(
        url=f"{back_end.url}/redirect/{{order_id}}?to=/orders/A1001&customer={{customer.id}}"
    )
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert outcome.reason == "redirect"
    assert [seen.path for seen in back_end.seen] == ["/redirect/A1001"]


async def test_an_unreachable_back_end_is_an_error(back_end):
    url = back_end.url
    back_end.server.shutdown()
    back_end.server.server_close()  # nothing listens on the port any more
    action = make_action(url=f"{url}/orders/{{order_id}}?customer={{customer.id}}")
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason) == ("error", "unreachable")
    assert outcome.detail == "the back end could not be reached (ConnectError)"


async def test_no_content_is_fine_for_an_action_that_shows_nothing(back_end):
    action = action_on(back_end, path="/empty/{order_id}", result="")
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.http_status, outcome.text) == ("ok", 204, "")


# --- metrics and logs ---------------------------------------------------------------------------------


async def test_every_call_is_counted_by_action_and_outcome(back_end):
    name = "metrics_probe"
    before = {o: calls(name, o) for o in ("ok", "error", "refused")}
    seconds = sample("cs_chat_action_call_seconds_count", action=name)
    ok = action_on(back_end, name=name)
    await calling.call(ok, {"order_id": "A1001"}, customer_id="c-1")
    await calling.call(ok, {"order_id": "nope"}, customer_id="c-1")
    failing = action_on(back_end, name=name, path="/status/500/{order_id}")
    await calling.call(failing, {"order_id": "A1001"}, customer_id="c-1")
    assert {o: calls(name, o) - before[o] for o in before} == {"ok": 1, "error": 1, "refused": 1}
    # Only calls that were sent have a latency.
    assert sample("cs_chat_action_call_seconds_count", action=name) - seconds == 2


async def test_log_lines_hold_no_secret_argument_or_customer_id(back_end, monkeypatch, caplog):
    monkeypatch.setenv("SHOP_API_TOKEN", SECRET)
    action = action_on(back_end, headers={"Authorization": "Bearer ${SHOP_API_TOKEN}"})
    caplog.set_level(logging.DEBUG)
    await calling.call(action, {"order_id": "A1001"}, customer_id="c-secret-customer")
    failing = action_on(back_end, path="/status/500/{order_id}", headers=action.headers)
    await calling.call(failing, {"order_id": "A1009"}, customer_id="c-secret-customer")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "Action order_status to 127.0.0.1: ok" in text
    assert "Action order_status to 127.0.0.1: error (http_500) HTTP 500 in" in text
    for leaked in (SECRET, "A1001", "A1009", "c-secret-customer", "/orders/"):
        assert leaked not in text


@pytest.mark.parametrize(
    "broken",
    [
        {"headers": {"X-Count": 5}},
        {"url": None},
        {"parameters": "not a schema"},
        {"method": "TRACE"},
        {"timeout_seconds": None},
    ],
)
async def test_an_action_saved_around_its_checks_is_refused_not_a_crash(back_end, broken):
    action = action_on(back_end)
    for name, value in broken.items():
        setattr(action, name, value)
    outcome = await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    assert (outcome.status, outcome.reason) == ("refused", "misconfigured")
    assert back_end.seen == []
