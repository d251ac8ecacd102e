"""A synthetic token source — not a model. For tests and pipeline benchmarks only.

It stands in for the engine where a test needs exact, instant or scripted output (a reply that
quotes the prompt, an XSS payload as "model text", a stream that stalls), or where a benchmark
measures the pipeline without the model's cost. The product never selects it: the worker
builds the real vLLM engine unless a test or benchmark hands it this one explicitly.

Its "tokenizer" is one token per character of a ChatML rendering, so budgets and usage are
exact and the reply function can read the whole prompt back. Offered functions are written
into the system turn as Qwen's template writes them (a "# Tools" block), calls in the history
as `<tool_call>` blocks and results as `<tool_response>` ones, so a scripted reply can be a
tool call (see `tool_call_text`) and a test can read what the model would have seen.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence

from inference_worker.coalesce import Chunk
from inference_worker.protocol import ChatTurn, Sampling, Tool
from inference_worker.tool_choice import ToolUse

ReplyFn = Callable[[str], str]


def chatml(messages: Sequence[ChatTurn], tools: Sequence[Tool] = ()) -> str:
    turns = []
    for index, message in enumerate(messages):
        content = message["content"]
        if index == 0 and tools and message["role"] == "system":
            listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
            content += f"\n\n# Tools\n\n<tools>\n{listed}\n</tools>"
        for call in message.get("tool_calls") or ():
            content += "\n" + tool_call_text(
                call["function"]["name"], json.loads(call["function"]["arguments"] or "{}")
            )
        if message["role"] == "tool":
            turns.append(
                f"<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n"
            )
        else:
            turns.append(f"<|im_start|>{message['role']}\n{content}<|im_end|>\n")
    return "".join(turns) + "<|im_start|>assistant\n"


def tool_call_text(name: str, arguments) -> str:
    """A call as Qwen writes it (`arguments` an object, or anything else for a test's slip)."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


class SyntheticEngine:
    def __init__(
        self,
        *,
        reply: ReplyFn | str = "This is a synthetic answer.",
        tokens_per_second: float = 500.0,
        first_token_delay: float = 0.0,
        max_model_len: int = 2048,
        model_name: str = "synthetic-token-source",
    ):
        self.reply = reply if callable(reply) else (lambda _prompt, text=reply: text)
        self.tokens_per_second = tokens_per_second
        self.first_token_delay = first_token_delay
        self.max_model_len = max_model_len
        self.model_name = model_name
        self.prompts: dict[str, str] = {}  # request id → prompt text, for tests to inspect
        self.samplings: dict[str, dict] = {}  # request id → the sampling it asked for
        self.tool_uses: dict[str, ToolUse | None] = {}  # request id → its tool use
        self.aborted: list[str] = []
        self._active: set[str] = set()

    def prompt_token_ids(
        self, messages: Sequence[ChatTurn], tools: Sequence[Tool] = ()
    ) -> list[int]:
        return [ord(char) for char in chatml(messages, tools)]

    async def stream(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: Sampling,
        tool_use: ToolUse | None = None,
    ) -> AsyncIterator[Chunk]:
        prompt = "".join(map(chr, prompt_token_ids))
        self.prompts[request_id] = prompt
        self.samplings[request_id] = dict(sampling)
        self.tool_uses[request_id] = tool_use
        full = self.reply(prompt)
        text = full[: sampling["max_tokens"]]
        finish = "length" if len(full) > len(text) else "stop"
        pieces = re.findall(r"\s*\S+", text) or [text]
        self._active.add(request_id)
        try:
            await asyncio.sleep(self.first_token_delay)
            for index, piece in enumerate(pieces):
                if index:
                    await asyncio.sleep(len(piece) / self.tokens_per_second)
                last = index == len(pieces) - 1
                yield Chunk(
                    text=piece,
                    token_count=len(piece),
                    finish_reason=finish if last else None,
                    prompt_tokens=len(prompt_token_ids),
                )
        finally:
            self._active.discard(request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def running_requests(self) -> int:
        return len(self._active)

    def shutdown(self) -> None:
        pass
