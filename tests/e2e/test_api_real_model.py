"""The API gateway with the real model: a key made by `manage.py create_api_key`, the chat API
whole and streamed (the second call remembers the first), and the official `openai` client's
completion and stream with usage, against Daphne and the vLLM worker as `make run` starts
them."""

import io
import json

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from chat.models import Message
from tests.e2e.conftest import MODEL_ENDINGS, STACK_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MODEL = STACK_MODEL.folder


@pytest.fixture
async def secret() -> str:
    out = io.StringIO()
    await sync_to_async(call_command)("create_api_key", "--name", "probe", stdout=out)
    return out.getvalue().strip().splitlines()[-1]


async def test_the_chat_api_answers_from_the_real_model_and_remembers(real_stack, secret):
    async with httpx.AsyncClient(
        base_url=real_stack.http, timeout=180, headers={"Authorization": f"Bearer {secret}"}
    ) as http:
        first = await http.post(
            "/api/v1/chat",
            json={
                "session_id": "probe-1",
                "user_input": "Hello, my order number is 4711.",
                "max_tokens": 40,
            },
        )
        assert first.status_code == 200, first.text
        first = first.json()
        assert first["response"].strip() and first["fallback"] is False
        assert first["finish_reason"] in MODEL_ENDINGS
        assert first["usage"]["completion_tokens"] > 0 and 0 < first["ttft_ms"]

        frames = []
        async with http.stream(
            "POST",
            "/api/v1/chat",
            json={
                "session_id": "probe-1",
                "user_input": "Which order number did I give you?",
                "max_tokens": 40,
                "stream": True,
            },
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line[len("data: ") :]))
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["message.ack", "bot.start"] and kinds[-1] == "bot.done"
    assert "bot.delta" in kinds
    done = frames[-1]
    assert done["fallback"] is False
    # The second prompt holds the first turn, question and answer as stored. (Token counts
    # cannot show it: each question brings its own help-centre lines, and the first's may be
    # the longer.)
    second = await Message.objects.aget(pk=done["message_id"])
    assert [(turn["role"], turn["content"]) for turn in second.prompt[1:]] == [
        ("user", "Hello, my order number is 4711."),
        ("assistant", first["response"]),
        ("user", "Which order number did I give you?"),
    ]


async def test_the_openai_client_gets_a_completion_and_a_stream_with_usage(real_stack, secret):
    client = openai.AsyncOpenAI(
        base_url=f"{real_stack.http}/v1", api_key=secret, max_retries=0, timeout=180
    )
    assert [m.id for m in (await client.models.list()).data] == [MODEL]
    completion = await client.chat.completions.create(
        model=MODEL,
        max_tokens=30,
        messages=[{"role": "user", "content": "Say hello to a customer."}],
    )
    assert completion.choices[0].message.content.strip()
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0

    stream = await client.chat.completions.create(
        model=MODEL,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Say hello to a customer."}],
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
