"""What a run knows of the answer under way (a run answers one question at a time)."""

import uuid
from dataclasses import dataclass, field

from chat import limits
from chat.answering.prompt import ToolOffer
from chat.knowledge import grounding
from chat.knowledge.retrieval import Hit
from chat.models import Message
from chat.punctuation import FullwidthPunctuation
from inference_worker import protocol


@dataclass
class Answer:
    """The state of one answer: one inference request, one bot message."""

    question: Message
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    message: Message | None = None
    parts: list[str] = field(default_factory=list)
    saved_chars: int = 0
    sent_at: float = 0.0
    started_at: float | None = None  # a worker took the request
    first_token_at: float | None = None
    last_event_at: float = 0.0
    next_presence_check: float = 0.0
    punctuation: FullwidthPunctuation | None = None
    prompt: list[protocol.ChatTurn] = field(default_factory=list)  # as sent, before trimming
    trimmed: int = 0  # turns the worker left out to fit the token budget
    grounded: grounding.Grounded | None = None  # the help-centre passages offered
    hits: list[Hit] = field(default_factory=list)  # the passages found, best first
    asked: str = ""  # what they were searched for: the question, with the one before it
    lines: list | None = None  # their statements that answer it best (guarding), once ranked
    passages: int = 0  # of them, those the worker's token budget held
    slot: limits.Slot | None = None  # the site's answers streaming at once
    done_frame: dict | None = None  # the bot.done sent, for a socket that joins after it
    finished: bool = False
    # The product's guards (chat/guards.py): on for customer channels.
    guarded: bool = True
    sampling: protocol.Sampling | None = None
    stream_guards: protocol.Guards | None = None
    prefix: str = ""  # the product's words before the model's (an apology)
    complaint: bool = False
    ask_details: bool = False  # the question is about an order, without its number
    guards: list[str] = field(default_factory=list)  # those that shaped the answer
    offer_human: bool = False
    retried: bool = False  # asked again once, with the rule it broke restated
    fallback: bool = False  # replaced by the fallback rules' answer after breaking a rule
    quoted: bool = False  # replaced by the help centre's own statements (chat/guards.QUOTED)
    calls: list[int] = field(default_factory=list)  # the ActionCalls it made (chat/actions)
    action_results: str = ""  # what they answered, for the model (chat/answering/acting.py)
    action_texts: list[str] = field(
        default_factory=list
    )  # their results, as the customer sees them
    tools: ToolOffer | None = None  # functions the caller offered (OpenAI-compatible API)
    # The conversation's actions the product offers the model (chat/answering/proposing.py);
    # None once the model's calls were handled, and for every answer with no action to offer.
    offered: ToolOffer | None = None
    # Tokens of the request whose output was the model's calls: the answer's usage counts them.
    call_tokens: tuple[int, int] = (0, 0)
    tool_calls: list[protocol.ToolCall] | None = None  # the model called them

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def usage(self, event: dict) -> dict:
        """prompt_tokens and completion_tokens of a `done` event, with the calls' request."""
        prompt, completion = event.get("prompt_tokens"), event.get("completion_tokens")
        if self.call_tokens == (0, 0):
            return {"prompt_tokens": prompt, "completion_tokens": completion}
        return {
            "prompt_tokens": (prompt or 0) + self.call_tokens[0],
            "completion_tokens": (completion or 0) + self.call_tokens[1],
        }
