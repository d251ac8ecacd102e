"""The embedded default model, Qwen2.5-Coder-0.5B-Instruct, prepared as `make run` prepares it
(downloaded, checked and converted once) and served by a real worker process: customers get
its answers, in their language, through the chat API's answer path with the sample help centre.

The rest of tests/e2e runs its stack on SmolLM2 (tests/e2e/conftest.py): the pipeline behaves
the same whatever the model, and this module is where the default one is asked."""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command

from chat import guards
from chat.models import BotProfile, Message
from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT
from devstack.stack import WORKER_READY_PATTERN, ReadyCheck, Supervisor, wait_ready
from inference_worker import pool
from inference_worker.model_prep import DEFAULT_EMBEDDED_MODEL, embedded_model
from inference_worker.textguards import han_share
from runtime.redis_client import get_redis
from tests.api.helpers import chat, make_client
from tests.e2e.conftest import MODEL_ENDINGS, ROOT, free_port
from tests.waiting import poll

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DEFAULT_MODEL = embedded_model(DEFAULT_EMBEDDED_MODEL)


@pytest.fixture(scope="module")
def default_model_worker(redis_server):
    """A worker with the default model, on the unit tests' Redis (so this process's answer
    runs reach it), loaded once for the module."""
    metrics_port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("INFERENCE_EMBEDDED_MODEL", "INFERENCE_MODEL_DIR", "INFERENCE_MODEL")
    }
    env.update(
        {
            "REDIS_URL": redis_server.url,
            "INFERENCE_METRICS_PORT": str(metrics_port),
            "INFERENCE_MODEL_DIR": str(Path(settings.VAR_DIR) / "models" / DEFAULT_MODEL.folder),
            "INFERENCE_ENFORCE_EAGER": "true",  # the same engine, loaded in seconds, not minutes
            "PYTHONUNBUFFERED": "1",
        }
    )
    out = io.StringIO()
    sup = Supervisor(out=out, stop_timeout=30)
    sup.start(
        "worker", [sys.executable, str(ROOT / "manage.py"), "run_inference_worker"], env, cwd=ROOT
    )
    try:
        # Preparing it on a fresh machine (download, check, convert) comes first: ~1.5 min.
        wait_ready(
            sup,
            [
                ReadyCheck(
                    "worker", f"http://127.0.0.1:{metrics_port}/metrics", WORKER_READY_PATTERN
                )
            ],
            threading.Event(),
            timeout=900,
        )
    except RuntimeError:
        sup.stop_all()
        pytest.fail("the default model's worker did not start:\n" + out.getvalue()[-5000:])
    yield
    sup.stop_all()


@pytest.fixture
async def desk(default_model_worker):
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
    from chat.models import ApiScope
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
