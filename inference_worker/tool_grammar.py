"""Making a small model's output a valid call when it must call: vLLM's structured outputs.

With tool_choice "required" or a named function, the output is constrained by the structural
tag vLLM's own OpenAI server uses for Hermes-format calls (Qwen's): the model writes
`<tool_call>\\n{"name": "<an offered function>", "arguments": ` then JSON that follows that
function's parameters schema, then `}\\n</tool_call>`; a named function is called once, and
with parallel_tool_calls false "required" stops after one call. The arguments are held to the
schema whatever the tool's `strict` (the server's `--tool-strict-level parameter`): a 0.5B
model needs it. "auto" is left free, as vLLM's server leaves it, unless a tool asks for
`strict`; what it writes is read by inference_worker.tool_calls.

vLLM (and xgrammar, its grammar backend, on the CPU build too) is imported on first use: the
worker has it loaded already, and nothing else needs it.
"""

import json

from inference_worker.tool_choice import ToolRequestError, ToolUse

# vLLM's name for the structural tag of Hermes-format calls (its Hermes2ProToolParser's).
HERMES = "hermes"


def structural_tag(tool_use: ToolUse) -> str | None:
    """The structural tag (JSON) that constrains the output, or None when it is free.
    Raises ToolRequestError when a parameters schema cannot be made into a grammar."""
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionNamedToolChoiceParam,
        ChatCompletionToolsParam,
    )
    from vllm.tool_parsers.structural_tag_registry import (
        get_model_structural_tag,
        limit_to_single_tool_call,
    )
    from vllm.tool_parsers.tool_strict_level import ToolStrictLevel

    if tool_use.mode == "named":
        choice = ChatCompletionNamedToolChoiceParam.model_validate(
            {"type": "function", "function": {"name": tool_use.named}}
        )
    else:
        choice = tool_use.mode
    try:
        tag = get_model_structural_tag(
            HERMES,
            [ChatCompletionToolsParam.model_validate(tool) for tool in tool_use.tools],
            choice,
            reasoning=False,
            strict_level=ToolStrictLevel.PARAMETER if tool_use.forced else ToolStrictLevel.AUTO,
        )
        if tag is None:
            return None
        if not tool_use.parallel:
            limit_to_single_tool_call(tag)
        text = json.dumps(tag.model_dump())
        _check_grammar(text)
    except Exception as exc:  # vLLM's and xgrammar's refusals of a schema take many forms
        raise ToolRequestError(
            f"tools: a parameters schema cannot be followed ({str(exc)[:200]})"
        ) from exc
    return text


def _check_grammar(tag: str) -> None:
    """Build the grammar now, as the engine will: a schema it cannot take is the request's
    fault (bad_request), not an engine failure."""
    import xgrammar

    xgrammar.Grammar.from_structural_tag(tag)
