"""What a scorecard run records: each answer as the customer got it, each case with its score.

Plain data, so that scoring and the report need neither Django nor a running stack (their
tests build these by hand).
"""

from dataclasses import dataclass, field

from chat.scorecard.questions import Case

# How a customer's turn ended.
ANSWERED = "answered"  # a bot.done came (the model's answer, a guard's, or the fallback's)
HANDOFF = "handoff"  # the message asked for a human: queued for one, the bot did not answer
SILENT = "silent"  # a human holds the conversation: the bot stayed silent
NO_ANSWER = "no_answer"  # no bot.done in time (the listener's own deadline passed)

# Finish reasons that are no guard's decision: the model ended, or something stopped it.
MODEL_OR_STOP_REASONS = frozenset(
    {"stop", "length", "takeover", "handoff", "closed", "disconnected", "interrupted", "silenced"}
)


@dataclass
class Answer:
    question: str
    outcome: str = ANSWERED
    text: str = ""  # what the customer read, deltas joined
    finish_reason: str | None = None
    fallback: bool = False
    # The model gave no answer: a deadline passed, the worker failed, was overloaded or gone
    # (the fallback rules answer then). Neither the model's nor a guard's answer: never a pass,
    # and not held to the language, loop and length rules, which measure the model.
    model_failed: bool = False
    offer_human: bool = False  # bot.done's flag: the product showed a "talk to a human" button
    guards: list[str] = field(default_factory=list)  # bot.done's: the guards that shaped it
    partial: bool = False
    message_id: int | None = None
    sources: list[str] = field(default_factory=list)  # titles of the articles it cited
    ttft_ms: int | None = None  # the product's own figures, from bot.done
    total_ms: int | None = None
    wall_ms: float | None = None  # from sending the message to bot.done, as a client sees it
    first_text_ms: float | None = None  # from sending to the first text

    @property
    def guards_fired(self) -> list[str]:
        """The product's guards that shaped this answer: bot.done names them; a finish
        reason that is no model's or stop's ending names one too (a product that does not
        list them yet)."""
        fired = list(self.guards)
        reason = self.finish_reason
        if (
            self.outcome == ANSWERED
            and reason
            and reason not in MODEL_OR_STOP_REASONS
            and not self.model_failed
            and reason not in fired
        ):
            fired.append(reason)
        return fired


@dataclass(frozen=True)
class AnswerChecks:
    """The measures every answer is held to, the first turn's too."""

    language_ok: bool
    han_share: float  # Han characters among Han characters and Latin words
    loop: str | None  # what repeats, when the text loops
    length: int  # Han characters (Chinese cases) or words (others)
    over_limit: bool


@dataclass(frozen=True)
class CaseScore:
    passed: bool
    reasons: list[str]  # why it failed; empty when it passed
    # One per answer received, in order; None for one that is not the model's (none came, a
    # hand-off, the model failed).
    answers: list[AnswerChecks | None]
    facts_expected: int
    facts_found: int
    missing_facts: list[tuple[str, ...]]
    behaviour_ok: bool | None  # the expectation's own check on the last answer
    offers_human: bool
    apologises: bool
    says_not_covered: bool
    asks_for_details: bool
    greets: bool


@dataclass
class CaseResult:
    case: Case
    answers: list[Answer]
    conversation_id: str = ""
    score: CaseScore | None = None

    @property
    def last(self) -> Answer | None:
        return self.answers[-1] if self.answers else None
