"""The model's tool calls, read from its output as it streams.

Qwen's models (and Hermes-format ones) write a call as
`<tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>`, one
such block per call, possibly after some text. `ToolCallHold` passes text on as it comes, but
holds back output from the moment it may begin a call (a `<tool_call>` tag, part of one at the
end, and white space before it), so raw call text is never streamed as answer text. When the
engine ends, the held output is read as calls: each must name an offered function and carry a
JSON object as arguments, or the whole output is no tool call and is given back as text, with
the reason (protocol.InvalidToolCall).

The reading is vLLM's Hermes2ProToolParser's (text before the first call is the content, a last
call may lack its closing tag, anything after the calls is dropped; tests/worker checks the two
agree), written out here so that it names why a call is invalid, logs no traceback for a
model's slip, and needs neither a tokenizer nor vLLM's server modules.
"""

import json
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

from inference_worker.protocol import InvalidToolCall, ToolCall

CALL_START = "<tool_call>"
CALL_END = "</tool_call>"
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCalls:
    """How output that holds `<tool_call>` reads: the calls, or why they are none."""

    calls: list[ToolCall] = field(default_factory=list)
    invalid: str | None = None  # an InvalidToolCall reason; `calls` is then empty


def read_tool_calls(text: str, offered: Collection[str]) -> ToolCalls:
    """The calls in `text` (which holds at least one `<tool_call>`), each of a function in
    `offered`."""
    calls: list[ToolCall] = []
    for closed, open_ended in _CALL.findall(text):
        try:
            call = json.loads(closed or open_ended)
        except ValueError:
            return ToolCalls(invalid=InvalidToolCall.MALFORMED)
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return ToolCalls(invalid=InvalidToolCall.MALFORMED)
        if "arguments" not in call:
            return ToolCalls(invalid=InvalidToolCall.MALFORMED)
        if call["name"] not in offered:
            return ToolCalls(invalid=InvalidToolCall.UNKNOWN_FUNCTION)
        if not isinstance(call["arguments"], dict):
            return ToolCalls(invalid=InvalidToolCall.ARGUMENTS_NOT_OBJECT)
        calls.append(
            {
                "id": new_call_id(),
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": json.dumps(call["arguments"], ensure_ascii=False),
                },
            }
        )
    return ToolCalls(calls=calls)


def _partial_tag_at_end(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a beginning of `tag` (not all of it)."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


@dataclass
class Ending:
    """What the held output of an ended answer is. With `calls`, the answer is those calls;
    otherwise `release` is text still to send (held white space, or what looked like the start
    of a tag), or, for output written as a call that is none, `invalid` says why and the
    answer's whole text is `text`."""

    calls: list[ToolCall] = field(default_factory=list)
    release: str = ""
    invalid: str | None = None
    text: str = ""


class ToolCallHold:
    """Passes an answer's text on, holding back what may be a tool call (see the module)."""

    def __init__(self, offered: Collection[str], *, parallel: bool = True):
        self.offered = offered
        self.parallel = parallel
        self.text = ""
        self.sent = 0  # characters of `text` passed on
        self.call_at: int | None = None  # where the first <tool_call> begins

    @property
    def holding(self) -> bool:
        return self.sent < len(self.text)

    def feed(self, text: str) -> str:
        """The part of the output so far that can be sent now."""
        self.text += text
        if self.call_at is not None:
            return ""
        found = self.text.find(CALL_START, self.sent)
        if found != -1:
            self.call_at = end = found
        else:
            end = len(self.text) - _partial_tag_at_end(self.text, CALL_START)
        # White space may come before a call: held, so an answer that is a call streams
        # nothing at all.
        while end > self.sent and self.text[end - 1].isspace():
            end -= 1
        if end <= self.sent:
            return ""
        ready, self.sent = self.text[self.sent : end], end
        return ready

    def finish(self) -> Ending:
        held = self.text[self.sent :]
        if self.call_at is None:
            self.sent = len(self.text)
            return Ending(release=held)
        read = read_tool_calls(self.text[self.call_at :], self.offered)
        if read.invalid is not None:
            return Ending(invalid=read.invalid, text=self.text)
        return Ending(calls=read.calls if self.parallel else read.calls[:1])
