"""The OpenAI-compatible API (/v1/) through Django's async client and an in-process worker on
the synthetic token source. The official `openai` client against a real Daphne is in
tests/e2e/test_api_gateway.py."""

import io
import json

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.test import AsyncClient
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from chat.api.openai import model_name
from chat.knowledge.models import Article
from chat.models import ApiScope, Conversation, Message
from tests.api.helpers import complete, make_client, read_stream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def api():
    return await make_client(scopes=(ApiScope.OPENAI,))


def data_lines(raw: bytes) -> list[str]:
    return [
        line[len("data: ") :] for line in raw.decode().splitlines() if line.startswith("data: ")
    ]


async def test_models_lists_the_served_model(api):
    body = (await api.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [model_name()]


async def test_a_completion_uses_the_callers_history_and_is_stored(api, worker, engine):
    response = await complete(
        api,
        messages=[
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "My name is Zoe."},
            {"role": "assistant", "content": "Hello Zoe."},
            {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
        ],
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == model_name()
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": engine.reply("")}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0

    prompt = list(engine.prompts.values())[-1]
    assert "Answer in one word." in prompt  # added to the profile's system prompt
    assert (
        prompt.index("My name is Zoe.")
        < prompt.index("Hello Zoe.")
        < prompt.index("What is my name?")
    )
    conversation = await Conversation.objects.aget(channel=Conversation.Channel.OPENAI)
    roles = [m.role async for m in Message.objects.filter(conversation=conversation)]
    assert roles == ["customer", "bot", "customer", "bot"]


async def test_a_stream_is_openais_chunks_with_usage(api, worker, engine):
    response = await complete(
        api,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hi"}],
    )
    assert response["Content-Type"].startswith("text/event-stream")
    lines = data_lines(await read_stream(response))
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == engine.reply("")
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_without_include_usage_no_usage_chunk(api, worker):
    response = await complete(api, stream=True, messages=[{"role": "user", "content": "hi"}])
    chunks = [json.loads(line) for line in data_lines(await read_stream(response))[:-1]]
    assert all(c["choices"] for c in chunks) and "usage" not in chunks[-1]


async def test_a_grounded_answer_names_its_sources_whole_and_streamed(api, worker):
    """OpenAI's shape has no place for sources: the desk adds `sources` to the completion and
    to the chunk with the finish reason, as the chat API gives them."""
    await sync_to_async(call_command)("import_knowledge", "--sample", stdout=io.StringIO())
    question = [{"role": "user", "content": "How long does delivery to Germany take?"}]
    whole = (await complete(api, messages=question)).json()
    (source,) = whole["sources"]
    article = await Article.objects.aget(pk=source["article_id"])
    assert article.slug == "shipping"
    assert source == {"article_id": article.pk, "title": article.title, "url": article.source_url}
    # The official client keeps the field it does not know.
    assert ChatCompletion.model_validate(whole).sources == [source]

    response = await complete(api, stream=True, messages=question)
    chunks = [json.loads(line) for line in data_lines(await read_stream(response))[:-1]]
    finished = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["sources"] for c in finished] == [whole["sources"]]
    assert ChatCompletionChunk.model_validate(finished[0]).sources == [source]
    assert all("sources" not in c for c in chunks if c not in finished)

    # Nothing in the help centre covers it: an empty list, not a missing field.
    unrelated = [{"role": "user", "content": "Can you recommend a good pasta recipe?"}]
    assert (await complete(api, messages=unrelated)).json()["sources"] == []


async def test_unsupported_parameters_are_a_clear_400(api):
    response = await complete(
        api, messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function"}]
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Unknown or unsupported parameter 'tools'.",
        "type": "invalid_request_error",
        "param": "tools",
        "code": "unsupported_parameter",
    }
    many = await complete(api, messages=[{"role": "user", "content": "hi"}], n=2)
    assert many.status_code == 400 and many.json()["error"]["param"] == "n"
    assert not await Conversation.objects.aexists()


async def test_the_last_message_must_be_the_users(api):
    response = await complete(api, messages=[{"role": "assistant", "content": "hi"}])
    assert response.status_code == 400
    assert "last message" in response.json()["error"]["message"]


async def test_an_unknown_model_is_404_in_openais_shape(api):
    response = await api.post(
        "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and model_name() in error["message"]


async def test_a_chat_key_cannot_use_the_openai_api():
    client = await make_client(scopes=(ApiScope.CHAT,))
    response = await client.get("/v1/models")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


async def test_no_key_is_401_in_openais_shape():
    response = await AsyncClient().get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


async def test_control_characters_are_a_400_not_a_storage_error(api):
    response = await complete(api, messages=[{"role": "user", "content": "hi\x00"}])
    assert (
        response.status_code == 400 and "control character" in response.json()["error"]["message"]
    )
    assert not await Conversation.objects.aexists()


async def test_sampling_parameters_reach_the_worker(api, worker, engine):
    response = await complete(
        api,
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.2,
        top_p=0.5,
        frequency_penalty=0.3,
        max_tokens=7,
    )
    assert response.status_code == 200
    (sampling,) = engine.samplings.values()
    assert sampling["temperature"] == 0.2 and sampling["top_p"] == 0.5
    assert sampling["frequency_penalty"] == 0.3 and sampling["max_tokens"] == 7
