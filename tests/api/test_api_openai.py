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
from inference_worker.synthetic import tool_call_text
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
        api, messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Unknown or unsupported parameter 'response_format'.",
        "type": "invalid_request_error",
        "param": "response_format",
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


# --- function calling ---------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]
PARIS_CALL = tool_call_text("get_weather", {"city": "Paris"})
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def script(engine, text: str) -> str:
    engine.reply = lambda _prompt: text
    return text


async def test_tools_and_tool_choice_reach_the_worker(api, worker, engine):
    script(engine, PARIS_CALL)
    response = await complete(api, messages=ASK_WEATHER, tools=[WEATHER], tool_choice=NAMED)
    assert response.status_code == 200, response.content
    (use,) = engine.tool_uses.values()
    assert use.mode == "named" and use.named == "get_weather"
    assert [tool["function"]["name"] for tool in use.tools] == ["get_weather"]
    prompt = list(engine.prompts.values())[-1]
    assert prompt.index('"name": "get_weather"') < prompt.index("What's the weather in Paris?")


async def test_a_tool_call_is_returned_in_openais_shape(api, worker, engine):
    script(engine, PARIS_CALL)
    body = (await complete(api, messages=ASK_WEATHER, tools=[WEATHER])).json()
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    parsed = ChatCompletion.model_validate(body).choices[0].message.tool_calls[0]
    assert json.loads(parsed.function.arguments) == {"city": "Paris"}
    stored = await Message.objects.aget(role=Message.Role.BOT)
    assert stored.finish_reason == "tool_calls" and not stored.is_partial


async def test_a_plain_answer_has_no_tool_calls_field(api, worker, engine):
    body = (await complete(api, messages=ASK_WEATHER, tools=[WEATHER])).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": engine.reply("")}
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_a_streamed_tool_call_comes_as_openai_streams_it(api, worker, engine):
    script(engine, "One moment. " + PARIS_CALL)
    response = await complete(api, messages=ASK_WEATHER, tools=[WEATHER], stream=True)
    lines = data_lines(await read_stream(response))
    assert lines[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(line)) for line in lines[:-1]]
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.content or "" for d in deltas) == "One moment."
    calls = [call for d in deltas for call in d.tool_calls or ()]
    head, arguments = calls
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function"
    assert head.function.name == "get_weather" and head.function.arguments == ""
    assert arguments.index == 0 and arguments.id is None and arguments.function.name is None
    assert json.loads(arguments.function.arguments) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks][-1] == "tool_calls"
    # The text first, then the call: its head, then its arguments.
    kinds = ["text" if d.content else "call" for d in deltas if d.content or d.tool_calls]
    assert kinds == ["text"] * (len(kinds) - 2) + ["call", "call"]


async def test_a_tools_result_gets_a_text_answer(api, worker, engine):
    script(engine, "It is cloudy in Paris, 18 degrees.")
    messages = [
        {"role": "system", "content": "Be brief."},
        *ASK_WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_7",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_7", "content": '{"sky": "cloudy", "celsius": 18}'},
    ]
    response = await complete(api, messages=messages, tools=[WEATHER])
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": engine.reply("")}
    assert choice["finish_reason"] == "stop"
    prompt = list(engine.prompts.values())[-1]
    question = prompt.index("What's the weather in Paris?")
    assert question < prompt.index(PARIS_CALL) < prompt.index('{"sky": "cloudy", "celsius": 18}')
    assert prompt.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")
    # The transcript: the question and the answer (the call and result are in its prompt).
    stored = [(m.role, m.text) async for m in Message.objects.order_by("id")]
    assert stored == [("customer", "What's the weather in Paris?"), ("bot", engine.reply(""))]
    answer = await Message.objects.aget(role=Message.Role.BOT)
    assert [turn["role"] for turn in answer.prompt][-2:] == ["assistant", "tool"]


async def test_output_that_is_no_valid_call_is_returned_as_text(api, worker, engine):
    raw = script(engine, "Sure. " + tool_call_text("delete_account", {"id": 7}))
    body = (await complete(api, messages=ASK_WEATHER, tools=[WEATHER])).json()
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": raw}
    assert choice["finish_reason"] == "stop"

    response = await complete(api, messages=ASK_WEATHER, tools=[WEATHER], stream=True)
    chunks = [json.loads(line) for line in data_lines(await read_stream(response))[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == raw  # "Sure." streamed, then the rest once it was clear: nothing twice
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks if c["choices"])


async def test_a_stream_cut_back_by_the_loop_guard_sends_nothing_twice(api, worker, engine):
    script(engine, "The parcel ships today. " + "It ships today, it ships today. " * 12)
    whole = (await complete(api, messages=[{"role": "user", "content": "When?"}])).json()
    kept = whole["choices"][0]["message"]["content"]
    assert kept.startswith("The parcel ships today.") and len(kept) < len(engine.reply(""))
    response = await complete(api, messages=[{"role": "user", "content": "When?"}], stream=True)
    chunks = [json.loads(line) for line in data_lines(await read_stream(response))[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text.count("The parcel ships today.") == 1 and text.startswith(kept)


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"tools": [{"type": "function"}]}, "tools.0.function", "Field required"),
        (
            {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
            "tools.0.function.name",
            "pattern",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
                ]
            },
            "tools.0.function.parameters",
            "JSON Schema of an object",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"a": {"type": 7}}},
                        },
                    }
                ]
            },
            "tools.0.function.parameters",
            "not a valid JSON Schema",
        ),
        ({"tools": [WEATHER, WEATHER]}, "tools", "unique"),
        ({"tools": [{**WEATHER, "type": "code_interpreter"}]}, "tools.0.type", "function"),
        ({"tool_choice": "required"}, "tool_choice", "only allowed when tools are given"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls", "only allowed when tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
            "'x' is not in tools",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice", "must be 'none', 'auto'"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
            "tool_choice",
            '{"type": "function", "function": {"name"',
        ),
        (
            {
                "messages": [
                    *ASK_WEATHER,
                    {"role": "tool", "tool_call_id": "call_9", "content": "18 degrees"},
                ]
            },
            "messages",
            "answers no earlier assistant tool call",
        ),
        (
            {"messages": [{"role": "user", "content": "hi", "tool_call_id": "call_1"}]},
            "messages.0",
            "tool_call_id",
        ),
        (
            {"messages": [{"role": "assistant", "content": None}, *ASK_WEATHER]},
            "messages.0",
            "content is required",
        ),
    ],
)
async def test_bad_tools_and_tool_messages_are_a_400_naming_the_field(api, body, param, says):
    response = await complete(api, **{"messages": ASK_WEATHER, **body})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert error["type"] == "invalid_request_error"
    assert not await Conversation.objects.aexists()
