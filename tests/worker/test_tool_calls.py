"""Reading the model's tool calls as its output streams (inference_worker.tool_calls): what is
passed on at once, what is held, and what an ended answer's held output is."""

import json

import pytest

from inference_worker.protocol import InvalidToolCall
from inference_worker.synthetic import tool_call_text
from inference_worker.tool_calls import ToolCallHold, read_tool_calls

OFFERED = {"get_weather", "get_time"}
PARIS = tool_call_text("get_weather", {"city": "Paris"})
TOKYO_TIME = tool_call_text("get_time", {"city": "Tokyo"})


def stream(pieces, offered=OFFERED, parallel=True):
    """The text passed on piece by piece, and how the held output ends."""
    hold = ToolCallHold(offered, parallel=parallel)
    sent = [hold.feed(piece) for piece in pieces]
    return "".join(sent), hold.finish()


def arguments(call) -> dict:
    return json.loads(call["function"]["arguments"])


def test_a_single_call_streams_nothing_and_ends_as_the_call():
    sent, ending = stream([PARIS])
    assert sent == "" and ending.release == "" and ending.invalid is None
    (call,) = ending.calls
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert arguments(call) == {"city": "Paris"}
    assert call["id"].startswith("call_") and len(call["id"]) == len("call_") + 24


def test_two_calls_are_both_read_in_order_with_their_own_ids():
    sent, ending = stream([PARIS + "\n" + TOKYO_TIME])
    assert sent == ""
    assert [c["function"]["name"] for c in ending.calls] == ["get_weather", "get_time"]
    assert [arguments(c) for c in ending.calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert ending.calls[0]["id"] != ending.calls[1]["id"]


def test_without_parallel_calls_only_the_first_is_kept():
    _, ending = stream([PARIS + "\n" + TOKYO_TIME], parallel=False)
    assert [c["function"]["name"] for c in ending.calls] == ["get_weather"]


def test_text_before_a_call_streams_and_the_white_space_before_the_tag_is_held():
    sent, ending = stream(["Let me check", " the weather.", "\n", PARIS])
    assert sent == "Let me check the weather."
    assert [c["function"]["name"] for c in ending.calls] == ["get_weather"]


def test_a_call_split_over_many_deltas_leaks_nothing():
    pieces = list("One moment. " + PARIS)  # a character at a time
    hold = ToolCallHold(OFFERED)
    sent = [hold.feed(piece) for piece in pieces]
    assert "".join(sent) == "One moment."
    assert all("<" not in piece for piece in sent)
    ending = hold.finish()
    assert [arguments(c) for c in ending.calls] == [{"city": "Paris"}]


def test_a_lone_angle_bracket_is_held_only_until_it_cannot_be_a_tag():
    hold = ToolCallHold(OFFERED)
    assert hold.feed("1 <") == "1"
    assert hold.feed(" 2") == " < 2"  # no tag begins "< ": passed on at once
    assert hold.feed("<tool") == ""
    assert hold.feed("box> is it.") == "<toolbox> is it."


def test_text_without_a_call_ends_with_what_was_held():
    sent, ending = stream(["Sunny in Paris", " today\n\n"])
    assert sent == "Sunny in Paris today"
    assert ending.release == "\n\n" and ending.calls == [] and ending.invalid is None
    sent, ending = stream(["Type <tool"])
    assert sent + ending.release == "Type <tool"


def test_a_last_call_without_its_closing_tag_is_a_call():
    """As vLLM reads it: the engine stopped at the end of the object."""
    _, ending = stream([PARIS.removesuffix("\n</tool_call>")])
    assert [arguments(c) for c in ending.calls] == [{"city": "Paris"}]


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', "malformed"),
        (
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": }}\n</tool_call>',
            "malformed",
        ),
        ('<tool_call>\n{"name": "get_weather"}\n</tool_call>', "malformed"),
        ('<tool_call>\n["get_weather", {"city": "Paris"}]\n</tool_call>', "malformed"),
        (tool_call_text("delete_account", {"id": 7}), "unknown_function"),
        (tool_call_text("get_weather", "Paris"), "arguments_not_object"),
        (tool_call_text("get_weather", '{"city": "Paris"}'), "arguments_not_object"),
        (PARIS + "\n" + tool_call_text("get_time", [1]), "arguments_not_object"),
    ],
)
def test_output_written_as_a_call_that_is_none_comes_back_whole_with_the_reason(output, reason):
    sent, ending = stream(["Checking. ", output])
    assert sent == "Checking."
    assert ending.calls == [] and ending.invalid == reason
    assert ending.text == "Checking. " + output  # the answer as it stands, for `text`


def test_a_named_choice_offers_only_that_function():
    assert read_tool_calls(TOKYO_TIME, {"get_weather"}).invalid == (
        InvalidToolCall.UNKNOWN_FUNCTION
    )


def test_non_ascii_arguments_stay_readable():
    (call,) = read_tool_calls(tool_call_text("get_weather", {"city": "北京"}), OFFERED).calls
    assert call["function"]["arguments"] == '{"city": "北京"}'


# --- the same reading as vLLM's own parser ------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_parser():
    from transformers import PreTrainedTokenizerFast
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    # Its non-streaming reading uses no tokenizer; the constructor only asks for one.
    return Hermes2ProToolParser(PreTrainedTokenizerFast(tokenizer_object=_tiny_tokenizer()))


def _tiny_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    return Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))


@pytest.mark.parametrize(
    "output",
    [
        PARIS,
        "Let me look. " + PARIS,
        PARIS + "\n" + TOKYO_TIME,
        PARIS.removesuffix("\n</tool_call>"),
        tool_call_text("get_weather", {"city": "São Paulo", "days": [1, 2], "hourly": True}),
    ],
)
def test_calls_read_as_vllms_hermes_parser_reads_them(vllm_parser, output):
    theirs = vllm_parser.extract_tool_calls(output, request=None)
    ours = read_tool_calls(output, OFFERED)
    assert theirs.tools_called and ours.invalid is None
    assert [(c["function"]["name"], arguments(c)) for c in ours.calls] == [
        (c.function.name, json.loads(c.function.arguments)) for c in theirs.tool_calls
    ]
    before = output[: output.find("<tool_call>")]
    assert (theirs.content or "") == before


def test_malformed_output_is_no_call_for_vllms_parser_either(vllm_parser):
    output = '<tool_call>\n{"name": "get_weather", "arguments": {"city": }}\n</tool_call>'
    assert not vllm_parser.extract_tool_calls(output, request=None).tools_called
    assert read_tool_calls(output, OFFERED).invalid == InvalidToolCall.MALFORMED
