"""Fitting a conversation into the model's context window.

The prompt may take max_model_len − max_tokens tokens. The system prompt and the newest
customer message are never cut; help-centre passages (best first) come next; older turns go
first, oldest first, until the rest fits.
"""

from collections.abc import Callable, Sequence

from inference_worker.protocol import ChatTurn, Grounding, grounded_system


class ContextOverflow(Exception):
    """Even the system prompt and the newest message alone do not fit."""


def fit_to_budget(
    messages: Sequence[ChatTurn],
    tokenize: Callable[[Sequence[ChatTurn]], Sequence[int]],
    budget: int,
) -> tuple[list[ChatTurn], int, list[int]]:
    """The messages to send, how many turns were dropped, and the prompt's token ids.

    `messages` is [system, turn, ..., newest]; `tokenize` renders a whole prompt to token ids
    exactly (chat template included), so what is kept is what the engine will see, and the
    ids of the prompt that fits are returned as they are: the caller does not tokenize again.
    Dropping a prefix of the turns only shortens the prompt, so the smallest cut that fits
    is found by binary search: a handful of tokenizer calls however long the history.
    """
    if len(messages) < 2:
        raise ValueError("expected a system prompt and at least one message")
    system, turns = messages[0], list(messages[1:])

    def prompt(cut: int) -> list[ChatTurn]:
        kept = turns[cut:]
        # A history cut open at an assistant turn (or a tool's result) would start with an
        # answer to a question the model no longer sees: cut on to the next customer turn.
        # (An uncut history may open with the assistant, e.g. an agent who wrote first.)
        while cut and len(kept) > 1 and kept[0]["role"] in ("assistant", "tool"):
            kept = kept[1:]
        return [system, *kept]

    whole = prompt(0)
    ids = list(tokenize(whole))
    if len(ids) <= budget:
        return whole, 0, ids
    last = len(turns) - 1
    fitting = prompt(last)
    fitting_ids = list(tokenize(fitting))
    if len(fitting_ids) > budget:
        raise ContextOverflow(
            f"the system prompt and the newest message need more than {budget} tokens"
        )
    low, high = 0, last  # prompt(low) is too long, prompt(high) fits
    while high - low > 1:
        middle = (low + high) // 2
        candidate = prompt(middle)
        candidate_ids = list(tokenize(candidate))
        if len(candidate_ids) <= budget:
            high, fitting, fitting_ids = middle, candidate, candidate_ids
        else:
            low = middle
    return fitting, len(messages) - len(fitting), fitting_ids


def fit_grounded(
    messages: Sequence[ChatTurn],
    tokenize: Callable[[Sequence[ChatTurn]], Sequence[int]],
    budget: int,
    grounding: Grounding | None,
) -> tuple[list[ChatTurn], int, list[int], int]:
    """`fit_to_budget` with help-centre passages added to the system prompt: as many as fit
    beside the newest message, best first (they answer the question; older turns are cut
    before them). Returns what fit_to_budget does, and how many passages were kept."""
    system, newest = messages[0], messages[-1]
    kept = len(grounding["passages"]) if grounding else 0
    while kept:
        with_passages = {**system, "content": grounded_system(system["content"], grounding, kept)}
        if len(tokenize([with_passages, newest])) <= budget:
            break
        kept -= 1
    system = {**system, "content": grounded_system(system["content"], grounding, kept)}
    fitting, trimmed, ids = fit_to_budget([system, *messages[1:]], tokenize, budget)
    return fitting, trimmed, ids, kept
