"""What a request's `tools`, `tool_choice` and `parallel_tool_calls` ask of an answer, checked.

The shapes are checked with the rest of the request (inference_worker.protocol); what they must
agree on is checked here, before the engine is touched: a named function must be offered,
"required" needs a function, names are unique and of OpenAI's form, and each function's
parameters are an object's JSON Schema. A request that fails gets `bad_request`.
"""

import re
from dataclasses import dataclass
from typing import Literal

from inference_worker.protocol import InferenceRequest, Tool

# OpenAI's rule for function names.
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

Mode = Literal["auto", "required", "named"]


class ToolRequestError(ValueError):
    """The request's tools or tool choice do not agree; the message says how."""


@dataclass(frozen=True)
class ToolUse:
    """The functions an answer is offered, and whether it must call one: "auto" (it may),
    "required" (at least one call), "named" (exactly one call, of `named`)."""

    tools: tuple[Tool, ...]
    mode: Mode = "auto"
    named: str | None = None
    parallel: bool = True  # False: one call at most

    @property
    def names(self) -> frozenset[str]:
        """The functions the model may call."""
        if self.named is not None:
            return frozenset({self.named})
        return frozenset(tool["function"]["name"] for tool in self.tools)

    @property
    def forced(self) -> bool:
        """The output must be a call (structured outputs make it one)."""
        return self.mode != "auto"


def tool_use_of(request: InferenceRequest) -> ToolUse | None:
    """The request's tool use; None when the answer is text only (no tools, or tool_choice
    "none": then the model is not shown them, and the prompt is the one it would be without)."""
    tools = request.get("tools") or []
    choice = request.get("tool_choice", "auto")
    names = [tool["function"]["name"] for tool in tools]
    for name in names:
        if not FUNCTION_NAME.fullmatch(name):
            raise ToolRequestError(
                f"tools: function name {name[:80]!r} is not 1-64 letters, digits, _ or -"
            )
    if len(set(names)) != len(names):
        raise ToolRequestError("tools: function names must be unique")
    for tool in tools:
        _check_parameters(tool)
    if choice == "none":
        return None
    if isinstance(choice, dict):
        named = choice["function"]["name"]
        if named not in names:
            raise ToolRequestError(f"tool_choice: function {named[:80]!r} is not in tools")
        return ToolUse(tuple(tools), mode="named", named=named, parallel=False)
    if not tools:
        if choice == "required":
            raise ToolRequestError("tool_choice: 'required' needs tools")
        return None
    return ToolUse(
        tuple(tools), mode=choice, parallel=request.get("parallel_tool_calls", True) is not False
    )


def _check_parameters(tool: Tool) -> None:
    parameters = tool["function"].get("parameters")
    if parameters is None:
        return
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise ToolRequestError(
            f"tools: the parameters of {tool['function']['name']!r} must be an object's JSON Schema"
        )
