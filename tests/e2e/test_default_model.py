"""The embedded default model, Qwen2.5-Coder-0.5B-Instruct, prepared as `make run` prepares it
(downloaded, checked and converted once) and served by a real worker process and Daphne:
customers get its answers, in their language, through the chat API's answer path with the
sample help centre; the model calls functions (an API caller's, the desk's own actions) in
Qwen's call format, held to them by structured outputs.

The rest of tests/e2e runs its stack on SmolLM2 (tests/e2e/conftest.py): the pipeline behaves
the same whatever the model, and this module is where the default one is asked."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
from pathlib import Path

import openai
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command

from chat import guards
from chat.api.keys import create_api_key
from chat.models import ApiScope, BotProfile, Message
from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT
from devstack.stack import WORKER_READY_PATTERN, ReadyCheck, Supervisor, wait_ready
from inference_worker import pool
from inference_worker.model_prep import DEFAULT_EMBEDDED_MODEL, embedded_model
from inference_worker.textguards import han_share
from runtime.redis_client import get_redis
from tests.api.helpers import chat, make_client
from tests.e2e.conftest import (
    FRESH_CONFIGURATION,
    MODEL_ENDINGS,
    ROOT,
    database_url,
    free_port,
)
from tests.waiting import poll

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DEFAULT_MODEL = embedded_model(DEFAULT_EMBEDDED_MODEL)


@pytest.fixture(scope="module")
def default_model_stack(redis_server, django_db_setup, django_db_blocker, tmp_path_factory):
    """The worker with the default model and Daphne, as `make run` starts them, on the unit
    tests' Redis (so this process's answer runs reach the worker too) and the test database;
    loaded once for the module. Yields Daphne's URL."""
    from django.db import connection

    port, metrics_port = free_port(), free_port()
    with django_db_blocker.unblock():
        db_url = database_url(connection.settings_dict)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("INFERENCE_EMBEDDED_MODEL", "INFERENCE_MODEL_DIR", "INFERENCE_MODEL")
    }
    env.update(
        {
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": db_url,
            "INFERENCE_METRICS_PORT": str(metrics_port),
            "INFERENCE_MODEL_DIR": str(Path(settings.VAR_DIR) / "models" / DEFAULT_MODEL.folder),
            "INFERENCE_ENFORCE_EAGER": "true",  # the same engine, loaded in seconds, not minutes
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "STATIC_ROOT": str(tmp_path_factory.mktemp("default-model-static")),
            "PYTHONUNBUFFERED": "1",
            **FRESH_CONFIGURATION,
        }
    )
    out = io.StringIO()
    sup = Supervisor(out=out, stop_timeout=30)
    manage = [sys.executable, str(ROOT / "manage.py")]
    sup.start("worker", [*manage, "run_inference_worker"], env, cwd=ROOT)
    sup.start(
        "daphne",
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["cs_site.asgi:application"],
        env,
        cwd=ROOT,
    )
    try:
        # Preparing it on a fresh machine (download, check, convert) comes first: ~1.5 min.
        wait_ready(
            sup,
            [
                ReadyCheck("daphne", f"http://127.0.0.1:{port}/healthz"),
                ReadyCheck(
                    "worker", f"http://127.0.0.1:{metrics_port}/metrics", WORKER_READY_PATTERN
                ),
            ],
            threading.Event(),
            timeout=900,
        )
    except RuntimeError:
        sup.stop_all()
        pytest.fail("the default model's stack did not start:\n" + out.getvalue()[-5000:])
    yield f"http://127.0.0.1:{port}"
    sup.stop_all()


@pytest.fixture
async def daphne(default_model_stack) -> str:
    """Daphne's URL, once the worker is seen again (each test starts with an empty Redis: its
    heartbeat puts it back within a second)."""
    await poll(live_worker, timeout=30)
    return default_model_stack


@pytest.fixture
async def desk(default_model_stack):
    """The sample help centre, the bot profile as shipped, and the worker seen again (each
    test starts with an empty Redis: its heartbeat puts it back within a second)."""
    await sync_to_async(call_command)("import_knowledge", "--sample", stdout=io.StringIO())
    await BotProfile.objects.aupdate_or_create(
        is_default=True,
        defaults={"name": DEFAULT_PROFILE_NAME, "system_prompt": DEFAULT_SYSTEM_PROMPT},
    )
    await poll(live_worker, timeout=30)
    return await make_client()


async def live_worker() -> bool:
    return await pool.live_workers(get_redis()) > 0


async def ask(api, question: str, language: str, session: str) -> tuple[dict, Message]:
    response = await chat(api, session_id=session, user_input=question, language=language)
    assert response.status_code == 200, response.content
    body = response.json()
    return body, await Message.objects.aget(pk=body["message_id"])


@pytest.mark.timeout(1200)
async def test_the_default_model_answers_in_the_customers_language_from_the_help_centre(desk):
    body, stored = await ask(desk, "寄到德国要几天？", "zh-CN", "zh")
    # "quoted": the model answered and a guard put the help centre's own lines in its place.
    assert body["fallback"] is False and body["finish_reason"] in MODEL_ENDINGS
    assert stored.model_name == DEFAULT_MODEL.folder
    assert body["sources"] and han_share(body["response"]) >= 0.5, body["response"]

    body, stored = await ask(desk, "How long does delivery to Germany take?", "en", "en")
    assert body["fallback"] is False and stored.model_name == DEFAULT_MODEL.folder
    assert body["sources"] and han_share(body["response"]) == 0, body["response"]


@pytest.mark.timeout(1200)
async def test_a_complaint_to_the_default_model_gets_the_products_apology_and_offer(desk):
    body, stored = await ask(desk, "我的包裹晚了一个星期还没到，太差了！", "zh-CN", "complaint")
    assert body["response"].startswith(guards.text("apology", "zh-CN"))
    assert body["offer_human"] is True and "complaint" in body["guards"]
    assert han_share(body["response"]) >= 0.5, body["response"]
    # Unless the product answered alone (no article covers it: "not covered", or "ask details"
    # for the customer's own parcel), the model answered.
    if body["finish_reason"] not in ("not_covered", "ask_details"):
        assert stored.model_name == DEFAULT_MODEL.folder


@pytest.mark.timeout(600)
async def test_the_default_model_answers_from_an_order_looked_up_for_a_verified_customer(
    desk, tmp_path
):
    """An action imported with import_actions, on a back end of the test's own: a verified
    customer's question in English and in Chinese calls it once each, for that customer, and
    the model answers from the result, in the customer's language."""
    from tests.actions.helpers import start_back_end
    from tests.actions.test_answer_actions import actions_file

    back_end, thread = start_back_end()
    try:
        path = actions_file(tmp_path, back_end)
        await sync_to_async(call_command)("import_actions", path, stdout=io.StringIO())
        api = await make_client(scopes=(ApiScope.CHAT, ApiScope.CUSTOMERS))
        for question, language in (
            ("Where is my order A7731?", "en"),
            ("我的订单 A7731 现在到哪了？", "zh-CN"),
        ):
            seen = len(back_end.seen)
            response = await chat(
                api,
                session_id=f"orders-{language}",
                user_input=question,
                language=language,
                customer={"id": "cust-42"},
            )
            assert response.status_code == 200, response.content
            body = response.json()
            print(f"\n{question} → {body['response']!r} ({body['finish_reason']})")
            assert len(back_end.seen) == seen + 1  # one call per question
            assert back_end.seen[-1].query == {"customer": ["cust-42"]}
            [action] = body["actions"]
            assert action["status"] == "ok"
            assert action["text"] == "Order A7731: shipped, due 2030-01-02"
            assert body["fallback"] is False and body["response"].strip()
            stored = await Message.objects.aget(pk=body["message_id"])
            assert stored.model_name == DEFAULT_MODEL.folder and stored.completion_tokens > 0
            if language == "zh-CN":
                assert han_share(body["response"]) > 0.5
    finally:
        back_end.server.shutdown()
        back_end.server.server_close()
        thread.join(5)


# --- function calling, with the official `openai` client ------------------------------------
# The model is told to call get_weather(city) for "What's the weather in Paris?", whole and
# streamed; structured outputs (vLLM's CPU build, xgrammar) make its output a valid call. A
# second call with the tool's result gets a text answer. (SmolLM2, which the rest of
# tests/e2e serves, has a chat template that knows no tools.)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. Berlin"}},
            "required": ["city"],
        },
    },
}
GET_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
QUESTION = {"role": "user", "content": "What's the weather in Paris?"}
# Greedy: the same call every time, so a failure is the pipeline's, not a sample's.
ASKED = {"temperature": 0.0, "max_tokens": 80}


@pytest.fixture
async def client(daphne) -> openai.AsyncOpenAI:
    _key, secret = await sync_to_async(create_api_key)(
        name="tools", scopes=[ApiScope.OPENAI], requests_per_minute=0, tokens_per_day=0
    )
    return openai.AsyncOpenAI(base_url=f"{daphne}/v1", api_key=secret, max_retries=0, timeout=300)


def city_of(arguments: str) -> str:
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict) and set(parsed) == {"city"}, arguments
    return parsed["city"]


@pytest.mark.timeout(1200)
async def test_the_model_calls_the_named_function_whole_streamed_and_reads_its_result(client):
    model = (await client.models.list()).data[0].id
    assert model == DEFAULT_MODEL.folder

    completion = await client.chat.completions.create(
        model=model, messages=[QUESTION], tools=[WEATHER], tool_choice=GET_WEATHER, **ASKED
    )
    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls", choice
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert "paris" in city_of(call.function.arguments).lower()
    assert completion.usage.completion_tokens > 0

    stream = await client.chat.completions.create(
        model=model,
        messages=[QUESTION],
        tools=[WEATHER],
        tool_choice=GET_WEATHER,
        stream=True,
        stream_options={"include_usage": True},
        **ASKED,
    )
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed_calls = [call for d in deltas for call in d.tool_calls or ()]
    assert {c.index for c in streamed_calls} == {0}
    assert streamed_calls[0].id.startswith("call_")
    assert streamed_calls[0].function.name == "get_weather"
    arguments = "".join(c.function.arguments or "" for c in streamed_calls)
    assert "paris" in city_of(arguments).lower()
    assert not "".join(d.content or "" for d in deltas).strip()  # no call text as content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    # The caller ran the function: its result goes back, and the answer is text.
    result = json.dumps({"city": "Paris", "sky": "cloudy", "celsius": 18})
    answer = await client.chat.completions.create(
        model=model,
        messages=[
            QUESTION,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ],
        tools=[WEATHER],
        tool_choice="none",
        **ASKED,
    )
    (final,) = answer.choices
    assert final.finish_reason in ("stop", "length") and not final.message.tool_calls
    assert final.message.content and final.message.content.strip()
    # The model saw the call and the result after the question (the stored prompt).
    stored = await Message.objects.filter(role=Message.Role.BOT).alast()
    assert stored.text == final.message.content
    assert [turn["role"] for turn in stored.prompt][-3:] == ["user", "assistant", "tool"]
    assert stored.prompt[-1]["content"] == result
    assert stored.prompt[-2]["tool_calls"][0]["function"]["name"] == "get_weather"


# --- the desk's own actions, proposed by the model in the chat API's answer -----------------

LATEST_ORDER_QUESTIONS = [
    "What's the status of my most recent order?",
    "我最近的订单到哪了？",
]


@pytest.mark.timeout(1200)
async def test_a_verified_customers_question_makes_the_model_call_the_action(daphne):
    """No trigger matches "my most recent order": the model is offered the look-up that needs
    no detail, and structured outputs make its output that call. The desk calls it once, for
    the customer the API vouches for, and a second request answers from the result; no call
    text reaches the customer."""
    import time

    import httpx
    from django.core.management import call_command

    from chat.actions.models import ActionCall
    from tests.actions.helpers import start_back_end
    from tests.api.helpers import parse_sse

    back_end, thread = start_back_end()
    try:
        path = Path(settings.VAR_DIR) / "e2e-latest-order.json"
        action = {
            "name": "latest_order",
            "description": "Look up the signed-in customer's most recent order: its number, "
            "status and expected delivery date.",
            "url": f"{back_end.url}/orders/A1001?customer={{customer.id}}",
            "result": "Order {order_id}: {status}, due {eta}",
            "timeout_seconds": 5,
        }
        path.write_text(json.dumps([action]))
        await sync_to_async(call_command)("import_actions", str(path), stdout=io.StringIO())
        path.unlink()
        _key, secret = await sync_to_async(create_api_key)(
            name="actions",
            scopes=[ApiScope.CHAT, ApiScope.CUSTOMERS],
            requests_per_minute=0,
            tokens_per_day=0,
        )
        async with httpx.AsyncClient(
            base_url=daphne, headers={"Authorization": f"Bearer {secret}"}, timeout=600
        ) as http:
            for number, question in enumerate(LATEST_ORDER_QUESTIONS):
                started = time.monotonic()
                response = await http.post(
                    "/api/v1/chat",
                    json={
                        "session_id": f"latest-{number}",
                        "user_input": question,
                        "language": "zh" if number else "en",
                        "customer": {"id": "cust-42"},
                        "stream": True,
                    },
                )
                took = time.monotonic() - started
                assert response.status_code == 200, response.text
                events = parse_sse(response.content)
                [action_frame] = [data for kind, data in events if kind == "action"]
                assert action_frame["name"] == "latest_order" and action_frame["status"] == "ok"
                assert action_frame["text"] == "Order A1001: shipped, due 2030-01-02"
                seen = back_end.seen[-1]
                assert seen.path == "/orders/A1001" and seen.query == {"customer": ["cust-42"]}
                streamed = "".join(d["text"] for kind, d in events if kind == "bot.delta")
                assert "tool_call" not in streamed and "latest_order" not in streamed
                [done] = [data for kind, data in events if kind == "bot.done"]
                assert "tool_calls" not in done and not done["fallback"]
                stored = await Message.objects.aget(pk=done["message_id"])
                assert stored.text.strip() and "<tool_call>" not in stored.text
                assert "Order A1001: shipped, due 2030-01-02" in stored.prompt[0]["content"]
                # The answer says what the look-up found: the model's words, or the result
                # itself where they did not (the `result` guard).
                assert guards.figures(stored.text) & {"2030-01-02", "01-02"}, stored.text
                call = await ActionCall.objects.aget(message_id=done["message_id"])
                assert call.proposed_by == "model" and call.arguments == {}
                print(
                    f"\n{question!r}: {took:.1f} s, {done['finish_reason']}, "
                    f"guards {done['guards']}: {stored.text!r}"
                )
        assert len(back_end.seen) == len(LATEST_ORDER_QUESTIONS)  # one call each
    finally:
        back_end.server.shutdown()
        back_end.server.server_close()
        thread.join(5)
