"""The prompt the model sees: the messages, and the functions it is offered, through the model's
own chat template, as vLLM's OpenAI server renders them.

Without tools the template is called exactly as it always was, so the prompt (and the prefix
cache that holds it) does not change. With tools, Qwen's template writes them into the system
part, after the system prompt; a call in the history is written back in the model's own call
format and a tool's result as a `<tool_response>`.
"""

import json
from collections.abc import Sequence
from typing import Any

from inference_worker.protocol import ChatTurn, Tool


def template_tools(tools: Sequence[Tool]) -> list[dict]:
    """The tools as vLLM's server hands them to the template (its ChatCompletionToolsParam
    dumped): name, description and parameters always (null when not given), strict when set."""
    rendered = []
    for tool in tools:
        function: dict[str, Any] = {
            "name": tool["function"]["name"],
            "description": tool["function"].get("description"),
            "parameters": tool["function"].get("parameters"),
        }
        if tool["function"].get("strict") is not None:
            function["strict"] = tool["function"]["strict"]
        rendered.append({"type": "function", "function": function})
    return rendered


def template_messages(messages: Sequence[ChatTurn]) -> list[dict]:
    """The messages as chat templates take them. OpenAI's shape carries a call's arguments as
    JSON text; templates want the object (vLLM's server converts them alike, and makes
    arguments that are no JSON object `{}`, so one bad call in a history cannot fail every
    later turn)."""
    if not any(message.get("tool_calls") for message in messages):
        return list(messages)
    return [_with_argument_objects(message) for message in messages]


def _with_argument_objects(message: ChatTurn) -> dict:
    if not message.get("tool_calls"):
        return dict(message)
    calls = []
    for call in message["tool_calls"]:
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
        except ValueError:
            arguments = {}
        calls.append(
            {
                **call,
                "function": {
                    **call["function"],
                    "arguments": arguments if isinstance(arguments, dict) else {},
                },
            }
        )
    return {**message, "tool_calls": calls}


def render_prompt(tokenizer, messages: Sequence[ChatTurn], tools: Sequence[Tool] = ()) -> str:
    """The prompt text, ending with the assistant's turn opened (`tokenizer`: the model's, a
    transformers tokenizer with its chat template)."""
    if not tools:
        return tokenizer.apply_chat_template(
            template_messages(messages), tokenize=False, add_generation_prompt=True
        )
    return tokenizer.apply_chat_template(
        template_messages(messages),
        tools=template_tools(tools),
        tokenize=False,
        add_generation_prompt=True,
    )


def prompt_token_ids(
    tokenizer, messages: Sequence[ChatTurn], tools: Sequence[Tool] = ()
) -> list[int]:
    """The prompt as the engine takes it: `render_prompt`'s text, encoded by the same
    tokenizer. The template already holds the special tokens; adding BOS again would double
    it."""
    return tokenizer.encode(render_prompt(tokenizer, messages, tools), add_special_tokens=False)
