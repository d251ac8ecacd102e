"""Tool calls through the worker, over the real channel layer, with the synthetic token source
scripted to write what a model writes: the tools reach the prompt, a call ends the answer as
`tool_calls` and never streams as text, output that is no valid call comes back as text."""

import json
import time

from channels.layers import get_channel_layer
from django.conf import settings

from inference_worker import protocol
from inference_worker.budget import fit_to_budget
from inference_worker.synthetic import chatml, tool_call_text
from tests.waiting import events_until_end, sample

SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 200, "frequency_penalty": 0.0}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
MESSAGES = [
    {"role": "system", "content": "You are a shop's assistant."},
    {"role": "user", "content": "What's the weather in Paris?"},
]
PARIS = tool_call_text("get_weather", {"city": "Paris"})


async def ask(*, request_id="t1", messages=MESSAGES, **tool_fields) -> list[dict]:
    layer = get_channel_layer()
    reply = await layer.new_channel()
    now = time.time()
    request = protocol.inference_request(
        request_id=request_id,
        reply_channel=reply,
        messages=messages,
        sampling=SAMPLING,
        deadline=now + 30,
        queued_at=now,
        start_by=now + 20,
        **tool_fields,
    )
    await layer.send(settings.INFERENCE["CHANNEL"], request)
    return await events_until_end(layer, reply)


def script(engine, text: str) -> str:
    """The synthetic source writes `text` (in whitespace-led pieces, as deltas)."""
    engine.reply = lambda _prompt: text
    return text


def streamed(events) -> str:
    return "".join(e["text"] for e in events if e["type"] == "inference.delta")


async def test_a_call_ends_the_answer_as_tool_calls_and_streams_no_text(worker, engine):
    script(engine, PARIS)
    called = sample("cs_worker_tool_call_answers_total", outcome="called")
    start, *deltas, done = await ask(tools=[WEATHER])
    assert start["type"] == "inference.start"
    # One empty delta says the output has begun (held); no call text is ever streamed.
    assert [d["text"] for d in deltas] == [""]
    assert done["type"] == "inference.done" and done["finish_reason"] == "tool_calls"
    (call,) = done["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert "text" not in done and "invalid_tool_call" not in done
    assert done["completion_tokens"] == len(PARIS) and done["ttft_ms"] is not None
    assert sample("cs_worker_tool_call_answers_total", outcome="called") == called + 1


async def test_the_tools_reach_the_prompts_system_part_and_the_engine(worker, engine):
    script(engine, PARIS)
    await ask(
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    prompt = engine.prompts["t1"]
    system = prompt[: prompt.index("<|im_end|>")]
    assert "# Tools" in system and '"name": "get_weather"' in system
    assert prompt.index("# Tools") < prompt.index("What's the weather in Paris?")
    use = engine.tool_uses["t1"]
    assert use.mode == "named" and use.named == "get_weather" and use.forced


async def test_without_tools_the_prompt_and_the_stream_are_as_ever(worker, engine):
    # Text that merely looks like a call is only text here.
    reply = script(engine, "Sunny. " + PARIS)
    *_, done = events = await ask()
    assert engine.prompts["t1"] == chatml(MESSAGES)
    assert engine.tool_uses["t1"] is None
    assert streamed(events) == reply
    assert done["finish_reason"] == "stop" and "tool_calls" not in done


async def test_tool_choice_none_hides_the_tools_and_reads_no_calls(worker, engine):
    script(engine, PARIS)
    *_, done = events = await ask(tools=[WEATHER], tool_choice="none")
    assert engine.prompts["t1"] == chatml(MESSAGES)
    assert streamed(events) == PARIS and done["finish_reason"] == "stop"


async def test_text_then_a_call_streams_the_text_and_ends_with_the_call(worker, engine):
    script(engine, "Let me check that for you. " + PARIS)
    *_, done = events = await ask(tools=[WEATHER])
    assert streamed(events) == "Let me check that for you."
    assert done["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in done["tool_calls"]] == ["get_weather"]


async def test_two_calls_and_parallel_tool_calls_false(worker, engine):
    script(engine, PARIS + "\n" + tool_call_text("get_weather", {"city": "Lyon"}))
    *_, done = await ask(tools=[WEATHER])
    assert [json.loads(c["function"]["arguments"]) for c in done["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "Lyon"},
    ]
    *_, done = await ask(request_id="t2", tools=[WEATHER], parallel_tool_calls=False)
    assert len(done["tool_calls"]) == 1


async def test_a_call_of_a_function_not_offered_comes_back_as_text(worker, engine):
    reply = script(engine, "Sure. " + tool_call_text("delete_account", {"id": 7}))
    invalid = sample("cs_worker_tool_call_answers_total", outcome="unknown_function")
    *_, done = events = await ask(tools=[WEATHER])
    assert streamed(events) == "Sure."  # the raw call was held, never streamed
    assert done["finish_reason"] == "stop" and "tool_calls" not in done
    assert done["invalid_tool_call"] == "unknown_function"
    assert done["text"] == reply  # the answer as it stands
    assert sample("cs_worker_tool_call_answers_total", outcome="unknown_function") == invalid + 1


async def test_a_call_cut_off_by_max_tokens_is_malformed_and_keeps_length(worker, engine):
    # Past max_tokens (200 characters of the synthetic source).
    reply = script(engine, PARIS * 20)
    *_, done = await ask(tools=[WEATHER])
    assert done["finish_reason"] == "length"
    assert done["invalid_tool_call"] == "malformed" and done["text"] == reply[:200]


async def test_a_tool_exchange_in_the_history_reaches_the_prompt(worker, engine):
    reply = script(engine, "It is cloudy, 18 degrees.")
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "cloudy"}'},
    ]
    *_, done = events = await ask(messages=messages, tools=[WEATHER])
    prompt = engine.prompts["t1"]
    assert prompt.index("What's the weather") < prompt.index(PARIS)
    assert prompt.index(PARIS) < prompt.index('<tool_response>\n{"sky": "cloudy"}')
    assert streamed(events) == reply and done["finish_reason"] == "stop"


async def test_tools_that_do_not_agree_are_a_bad_request_and_the_worker_lives_on(worker, engine):
    (error,) = await ask(
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    assert error["type"] == "inference.error" and error["code"] == "bad_request"
    assert "get_time" in error["message"] and engine.prompts == {}
    script(engine, PARIS)
    *_, done = await ask(request_id="t2", tools=[WEATHER])
    assert done["finish_reason"] == "tool_calls"


def test_a_cut_history_never_opens_with_a_tools_result():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "x" * 50},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "y" * 50},
        {"role": "user", "content": "next"},
    ]
    tokenize = lambda turns: [0] * sum(len(t["content"]) + 10 for t in turns)  # noqa: E731
    kept, trimmed, _ = fit_to_budget(messages, tokenize, 70)
    assert [t["role"] for t in kept] == ["system", "user"] and trimmed == 3
