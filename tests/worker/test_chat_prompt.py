"""The prompt with tools, by the default model's own tokenizer and chat template (Qwen2.5's, the
format Qwen3 shares): the tools in the system part, calls and results in the model's format,
and with no tools the very prompt the worker always built."""

import json
from pathlib import Path

import pytest

from inference_worker.chat_prompt import render_prompt, template_messages, template_tools
from inference_worker.model_prep import QWEN_CODER_05B, resolve_model_source

SYSTEM = "You are the assistant of Acme Shop."
QUESTION = "What's the weather in Paris?"
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
BARE = {"type": "function", "function": {"name": "ping"}}
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
EXCHANGE = [
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "cloudy", "celsius": 18}'},
]


@pytest.fixture(scope="module")
def tokenizer():
    from django.conf import settings
    from transformers import AutoTokenizer

    inference = settings.INFERENCE
    if str(inference["MODEL"]).strip() or inference["EMBEDDED_MODEL"] != QWEN_CODER_05B:
        pytest.skip("the settings select another model (INFERENCE_MODEL/INFERENCE_EMBEDDED_MODEL)")
    return AutoTokenizer.from_pretrained(Path(resolve_model_source(inference, progress=False)))


def system_part(prompt: str) -> str:
    assert prompt.startswith("<|im_start|>system\n")
    return prompt[len("<|im_start|>system\n") : prompt.index("<|im_end|>")]


def test_without_tools_the_prompt_is_the_one_built_before(tokenizer):
    before = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert render_prompt(tokenizer, MESSAGES) == before
    assert render_prompt(tokenizer, MESSAGES, ()) == before
    assert "<tools>" not in before


def test_the_tools_go_into_the_system_part_after_the_system_prompt(tokenizer):
    plain = render_prompt(tokenizer, MESSAGES)
    prompt = render_prompt(tokenizer, MESSAGES, [WEATHER, BARE])
    system = system_part(prompt)
    assert system.startswith(SYSTEM + "\n\n# Tools")
    listed = system[system.index("<tools>\n") + len("<tools>\n") : system.index("\n</tools>")]
    assert [json.loads(line) for line in listed.splitlines()] == template_tools([WEATHER, BARE])
    assert "<tool_call>" in system  # the format to call in
    # The turns after the system part are the same as without tools.
    assert prompt[prompt.index("<|im_end|>") :] == plain[plain.index("<|im_end|>") :]
    assert prompt.endswith("<|im_start|>assistant\n")


def test_a_call_and_its_result_are_written_in_the_models_own_format(tokenizer):
    prompt = render_prompt(tokenizer, [*MESSAGES, *EXCHANGE], [WEATHER])
    after_question = prompt[prompt.index(QUESTION) :]
    # The arguments as an object, not JSON text quoted again.
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call><|im_end|>' in after_question
    )
    assert (
        '<|im_start|>user\n<tool_response>\n{"sky": "cloudy", "celsius": 18}\n'
        "</tool_response><|im_end|>\n<|im_start|>assistant\n"
    ) in after_question


def test_tools_are_handed_to_the_template_as_vllms_server_hands_them():
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionToolsParam

    strict = {**WEATHER, "function": {**WEATHER["function"], "strict": True}}
    tools = [WEATHER, BARE, strict]
    assert template_tools(tools) == [
        ChatCompletionToolsParam.model_validate(tool).model_dump() for tool in tools
    ]


def test_call_arguments_become_objects_and_broken_ones_empty_objects():
    broken = {**CALL, "function": {"name": "get_weather", "arguments": "{not json"}}
    listed = {**CALL, "function": {"name": "get_weather", "arguments": "[1]"}}
    turns = template_messages(
        [{"role": "assistant", "content": "", "tool_calls": [CALL, broken, listed]}]
    )
    assert [c["function"]["arguments"] for c in turns[0]["tool_calls"]] == [
        {"city": "Paris"},
        {},
        {},
    ]
    assert CALL["function"]["arguments"] == '{"city": "Paris"}'  # the request is left alone
    assert template_messages(MESSAGES) == MESSAGES
