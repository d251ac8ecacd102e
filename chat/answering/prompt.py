"""What the model is asked with: the rendered system prompt, the turns in the model's roles, and
the sampling, from the bot profile and what a caller chose within SamplingRanges."""

from dataclasses import dataclass

from django.utils import timezone

from chat import selectors
from chat.actions.models import Action
from chat.actions.selectors import actions_for
from chat.answering import configuration
from chat.models import BotProfile, Conversation, Message, Site
from chat.prompting import SamplingRanges, render_system_prompt
from inference_worker import protocol
from runtime.aio import db

_MODEL_ROLE = {
    Message.Role.CUSTOMER: "user",
    Message.Role.BOT: "assistant",
    Message.Role.AGENT: "assistant",
}


@dataclass(frozen=True)
class ToolOffer:
    """Functions an API caller offers the model for one answer (the OpenAI-compatible API),
    and the calls and results that came after the question. The worker renders them with the
    model's chat template and reads the model's calls (docs/protocol.md)."""

    tools: tuple[protocol.Tool, ...] = ()
    choice: protocol.ToolChoice | None = None  # None: "auto" when there are tools
    parallel_calls: bool | None = None
    # After the question, in order: the assistant's turns with its calls, the tools' results.
    exchange: tuple[protocol.ChatTurn, ...] = ()


@dataclass(frozen=True)
class AnswerOptions:
    """What an API caller may choose for one answer, within the bot profile's limits (see
    `prompt_parts`). None: the profile's value."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    # The caller's own system message, added to the profile's system prompt (which stays:
    # it carries the company's rules).
    instructions: str = ""
    # Staff only (the playground): a system prompt in place of the profile's, rendered with
    # the same variables.
    system_prompt: str | None = None
    # The product's guards (chat/guards.py), as every customer channel has them. Off for the
    # OpenAI-compatible API, which keeps OpenAI's semantics: its answers get the loop guard
    # alone.
    guards: bool = True
    # The caller's functions and the tool exchange so far (OpenAI-compatible API only).
    tools: ToolOffer | None = None


def build_messages(system_prompt: str, turns: list[dict]) -> list[protocol.ChatTurn]:
    """System prompt first, then the turns as the model's user/assistant roles."""
    messages: list[protocol.ChatTurn] = [{"role": "system", "content": system_prompt}]
    messages += [
        {"role": _MODEL_ROLE[t["role"]], "content": t["text"]}
        for t in turns
        if t["role"] in _MODEL_ROLE
    ]
    return messages


@dataclass(frozen=True)
class PromptParts:
    system_prompt: str
    sampling: protocol.Sampling
    fullwidth: bool  # make Chinese punctuation full-width
    offer_human_when_nothing: bool  # no help-centre article covers the question: say so
    max_words: int  # the answer limit (chat/guards.py, inference_worker/textguards.py)
    max_han: int


@dataclass(frozen=True)
class AnswerContext:
    """What an answer reads from the database before its request leaves: the prompt's parts
    and the actions the site has (chat/answering/acting.py). Read in the hop that stores the
    question (chat/turns.py), so a new question costs one database hop, not three."""

    parts: PromptParts
    actions: list[Action]


@dataclass(frozen=True)
class _Configuration:
    """What answers in a conversation read of the desk's configuration (shared, read-only)."""

    profile: BotProfile
    site: Site | None
    actions: list[Action]


def _configuration(conversation: Conversation) -> _Configuration:
    def read() -> _Configuration:
        return _Configuration(
            profile=selectors.bot_profile_for(conversation),
            site=selectors.site_of(conversation),
            actions=actions_for(site_id=conversation.site_id, verified=True),
        )

    return configuration.read((conversation.bot_profile_id, conversation.site_id), read)


def read_answer_context(
    conversation: Conversation, options: AnswerOptions | None = None
) -> AnswerContext:
    """The AnswerContext of the conversation's next answer (inside a database hop)."""
    config = _configuration(conversation)
    return AnswerContext(parts=_prompt_parts(conversation, options, config), actions=config.actions)


def read_prompt_parts(
    conversation: Conversation,
    options: AnswerOptions | None = None,
) -> PromptParts:
    """System prompt, sampling and the profile's choices for one answer. A caller's options
    are clamped: at most the profile's max_tokens, temperature, top_p and frequency_penalty
    within SamplingRanges (the ranges a profile itself may hold)."""
    return _prompt_parts(conversation, options, _configuration(conversation))


def _prompt_parts(
    conversation: Conversation, options: AnswerOptions | None, config: _Configuration
) -> PromptParts:
    profile, site = config.profile, config.site
    template = (
        options.system_prompt
        if options is not None and options.system_prompt
        else profile.system_prompt
    )
    system_prompt = render_system_prompt(
        template,
        site_name=site.name if site else profile.site_name,
        language=conversation.language,
        region=conversation.region,
        timezone=conversation.timezone,
        now=timezone.now(),
        max_words=profile.answer_max_words,
        max_han=profile.answer_max_han,
    )
    sampling: protocol.Sampling = {
        "temperature": profile.temperature,
        "top_p": profile.top_p,
        "max_tokens": profile.max_tokens,
        "frequency_penalty": profile.frequency_penalty,
    }
    if options is not None:
        if options.max_tokens is not None:
            sampling["max_tokens"] = max(
                SamplingRanges.max_tokens.low, min(options.max_tokens, profile.max_tokens)
            )
        if options.temperature is not None:
            sampling["temperature"] = SamplingRanges.temperature.clamp(options.temperature)
        if options.top_p is not None:
            sampling["top_p"] = SamplingRanges.top_p.clamp(options.top_p)
        if options.frequency_penalty is not None:
            sampling["frequency_penalty"] = SamplingRanges.frequency_penalty.clamp(
                options.frequency_penalty
            )
        if options.instructions:
            system_prompt += "\n\n" + options.instructions
    fullwidth = profile.fullwidth_punctuation and conversation.language.lower().startswith("zh")
    return PromptParts(
        system_prompt,
        sampling,
        fullwidth,
        offer_human_when_nothing=(
            profile.when_no_knowledge == BotProfile.WhenNoKnowledge.OFFER_HUMAN
        ),
        max_words=profile.answer_max_words,
        max_han=profile.answer_max_han,
    )


prompt_parts = db(read_prompt_parts)
