"""A request's tools and tool choice (inference_worker.tool_choice), and the structured output
that makes a required or named call valid (inference_worker.tool_grammar): checked here with
xgrammar, the grammar backend vLLM's CPU build runs it with, on the very structural tag the
engine gets."""

import pytest

from inference_worker.synthetic import tool_call_text
from inference_worker.tool_choice import ToolRequestError, ToolUse, tool_use_of
from inference_worker.tool_grammar import structural_tag


def function(name: str, **parameters) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {
                "type": "object",
                "properties": parameters or {"city": {"type": "string"}},
                "required": list(parameters or ["city"]),
            },
        },
    }


WEATHER, TIME = function("get_weather"), function("get_time")
PARIS = tool_call_text("get_weather", {"city": "Paris"})
TOKYO_TIME = tool_call_text("get_time", {"city": "Tokyo"})


def request(**fields) -> dict:
    return {"request_id": "r1", **fields}


# --- what a request asks ------------------------------------------------------------------------


def test_no_tools_or_tool_choice_none_is_a_text_answer():
    assert tool_use_of(request()) is None
    assert tool_use_of(request(tool_choice="auto")) is None
    assert tool_use_of(request(tools=[WEATHER], tool_choice="none")) is None


def test_auto_may_call_any_offered_function():
    use = tool_use_of(request(tools=[WEATHER, TIME]))
    assert use.mode == "auto" and not use.forced and use.parallel
    assert use.names == {"get_weather", "get_time"}
    assert not tool_use_of(request(tools=[WEATHER], parallel_tool_calls=False)).parallel


def test_a_named_function_is_the_only_one_callable_and_once():
    use = tool_use_of(
        request(
            tools=[WEATHER, TIME],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    )
    assert use.mode == "named" and use.forced and not use.parallel
    assert use.names == {"get_time"}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "not in tools",
        ),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [WEATHER, WEATHER]}, "unique"),
        ({"tools": [function("get weather")]}, "letters, digits"),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
                ]
            },
            "object's JSON Schema",
        ),
    ],
)
def test_tools_that_do_not_agree_are_refused(fields, says):
    with pytest.raises(ToolRequestError, match=says):
        tool_use_of(request(**fields))


# --- structured outputs -------------------------------------------------------------------------


def accepts(tag: str, output: str) -> bool:
    """Whether the grammar of `tag` lets the model write exactly `output` and end."""
    import xgrammar

    compiled = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo([])).compile_structural_tag(tag)
    matcher = xgrammar.GrammarMatcher(compiled, terminate_without_stop_token=True)
    return matcher.accept_string(output) and matcher.is_terminated()


def test_auto_is_left_free():
    assert structural_tag(ToolUse((WEATHER, TIME))) is None


def test_a_named_function_must_be_called_once_with_arguments_that_follow_its_schema():
    tag = structural_tag(
        ToolUse((WEATHER, TIME), mode="named", named="get_weather", parallel=False)
    )
    assert accepts(tag, PARIS)
    assert not accepts(tag, "The weather in Paris is sunny.")
    assert not accepts(tag, TOKYO_TIME)  # another function
    assert not accepts(tag, PARIS + "\n" + PARIS)  # a second call
    assert not accepts(tag, tool_call_text("get_weather", {"town": "Paris"}))  # not its schema
    assert not accepts(tag, tool_call_text("get_weather", "Paris"))


def test_required_is_one_or_more_calls_of_offered_functions():
    tag = structural_tag(ToolUse((WEATHER, TIME), mode="required"))
    assert accepts(tag, PARIS) and accepts(tag, TOKYO_TIME)
    assert accepts(tag, PARIS + TOKYO_TIME)
    assert not accepts(tag, "")
    assert not accepts(tag, tool_call_text("delete_account", {"city": "Paris"}))
    single = structural_tag(ToolUse((WEATHER, TIME), mode="required", parallel=False))
    assert accepts(single, PARIS) and not accepts(single, PARIS + TOKYO_TIME)


def test_a_schema_no_grammar_can_follow_is_the_requests_fault():
    broken = function("f", a={"type": "string", "pattern": "(["})
    with pytest.raises(ToolRequestError, match="cannot be followed"):
        structural_tag(ToolUse((broken,), mode="required"))
