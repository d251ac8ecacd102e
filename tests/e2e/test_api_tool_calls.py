"""Function calling with the real model and the official `openai` client: the default model
(Qwen2.5-Coder-0.5B-Instruct, Qwen's chat template and call format), served by a real worker
process behind Daphne, is told to call get_weather(city) for "What's the weather in Paris?",
whole and streamed; structured outputs (vLLM's CPU build, xgrammar) make its output a valid
call. A second call with the tool's result gets a text answer.

The rest of tests/e2e serves SmolLM2 (tests/e2e/conftest.py), whose chat template knows no
tools: this module starts its own stack with the default model."""

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

from chat import guards
from chat.api.keys import create_api_key
from chat.models import ApiScope, Message
from devstack.localredis import start_redis
from devstack.stack import WORKER_READY_PATTERN, ReadyCheck, Supervisor, wait_ready
from inference_worker.model_prep import DEFAULT_EMBEDDED_MODEL, embedded_model
from tests.e2e.conftest import ROOT, database_url, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(1200)]

DEFAULT_MODEL = embedded_model(DEFAULT_EMBEDDED_MODEL)
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


@pytest.fixture(scope="module")
def tool_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """Redis, the worker with the default model and Daphne, as `make run` starts them, on the
    test database. Yields Daphne's URL."""
    from django.db import connection

    run_dir = tmp_path_factory.mktemp("tool-stack")
    redis = start_redis(run_dir)
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
            "REDIS_URL": redis.url,
            "DATABASE_URL": db_url,
            "INFERENCE_METRICS_PORT": str(metrics_port),
            "INFERENCE_MODEL_DIR": str(Path(settings.VAR_DIR) / "models" / DEFAULT_MODEL.folder),
            "INFERENCE_ENFORCE_EAGER": "true",  # the same engine, loaded in seconds
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "STATIC_ROOT": str(run_dir / "static"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    output = io.StringIO()
    sup = Supervisor(out=output, stop_timeout=30)
    manage = [sys.executable, str(ROOT / "manage.py")]
    sup.start("worker", [*manage, "run_inference_worker"], env, cwd=ROOT)
    sup.start(
        "daphne",
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
        env,
        cwd=ROOT,
    )
    try:
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
        redis.stop()
        pytest.fail("the stack did not start:\n" + output.getvalue()[-5000:])
    yield f"http://127.0.0.1:{port}"
    sup.stop_all()
    redis.stop()


@pytest.fixture
async def client(tool_stack) -> openai.AsyncOpenAI:
    _key, secret = await sync_to_async(create_api_key)(
        name="tools", scopes=[ApiScope.OPENAI], requests_per_minute=0, tokens_per_day=0
    )
    return openai.AsyncOpenAI(
        base_url=f"{tool_stack}/v1", api_key=secret, max_retries=0, timeout=300
    )


def city_of(arguments: str) -> str:
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict) and set(parsed) == {"city"}, arguments
    return parsed["city"]


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


async def test_a_verified_customers_question_makes_the_model_call_the_action(tool_stack):
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
            base_url=tool_stack, headers={"Authorization": f"Bearer {secret}"}, timeout=600
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
