import pytest

from inference_worker.budget import ContextOverflow, fit_to_budget


def count(messages) -> int:
    """A stand-in token count: 1 token per character plus 3 per message for the template."""
    return sum(len(m["content"]) + 3 for m in messages)


def tokenize(messages) -> list[int]:
    """A stand-in tokenizer: ids that name the message each token came from."""
    return [index for index, m in enumerate(messages) for _ in range(len(m["content"]) + 3)]


def conversation(*contents):
    roles = ["user", "assistant"]
    return [{"role": "system", "content": "S" * 10}] + [
        {"role": roles[i % 2], "content": c} for i, c in enumerate(contents)
    ]


def test_everything_is_kept_when_it_fits():
    messages = conversation("a" * 10, "b" * 10, "c" * 10)
    kept, dropped, ids = fit_to_budget(messages, tokenize, budget=1000)
    assert kept == messages and dropped == 0 and ids == tokenize(messages)


def test_oldest_turns_go_first_and_system_and_newest_stay():
    messages = conversation("q1" * 20, "a1" * 20, "q2" * 20, "a2" * 20, "newest")
    budget = count([messages[0], *messages[3:]])  # exactly q2, a2, newest fit
    kept, dropped, ids = fit_to_budget(messages, tokenize, budget)
    assert kept == [messages[0], *messages[3:]]
    assert ids == tokenize(kept)  # the ids of the prompt that fits, not of a candidate
    assert dropped == 2
    assert count(kept) <= budget


def linear_reference(messages, budget):
    """The obvious algorithm: drop the oldest turn until it fits."""
    system, turns = messages[0], messages[1:]
    for cut in range(len(turns)):
        kept = turns[cut:]
        while cut and len(kept) > 1 and kept[0]["role"] == "assistant":
            kept = kept[1:]
        if count([system, *kept]) <= budget:
            return [system, *kept]
    return None


def test_binary_search_agrees_with_dropping_one_turn_at_a_time():
    messages = conversation(*[f"turn {i} " * (i % 7 + 1) for i in range(21)])
    smallest = count([messages[0], messages[-1]])
    for budget in range(smallest, count(messages) + 5, 3):
        kept, dropped, ids = fit_to_budget(messages, tokenize, budget)
        assert kept == linear_reference(messages, budget), budget
        assert dropped == len(messages) - len(kept)
        assert ids == tokenize(kept)


def test_history_does_not_start_with_an_assistant_turn():
    messages = conversation("q1" * 30, "a1", "q2", "a2", "newest")
    budget = count([messages[0], *messages[2:]])  # would fit from a1 on
    kept, _, _ = fit_to_budget(messages, tokenize, budget)
    assert kept[1]["role"] == "user"
    assert kept == [messages[0], *messages[3:]]


def test_overflow_when_system_and_newest_alone_do_not_fit():
    messages = conversation("old", "older", "x" * 500)
    with pytest.raises(ContextOverflow):
        fit_to_budget(messages, tokenize, budget=100)


def test_binary_search_keeps_tokenizer_calls_few():
    calls = []

    def counting(messages):
        calls.append(1)
        return tokenize(messages)

    messages = conversation(*["x" * 50] * 201)
    fit_to_budget(messages, counting, budget=count(messages) // 3)
    assert len(calls) <= 12


def test_an_uncut_history_may_open_with_the_assistant():
    messages = [
        {"role": "system", "content": "S"},
        {"role": "assistant", "content": "agent"},
        {"role": "user", "content": "question"},
    ]
    assert fit_to_budget(messages, tokenize, budget=1000) == (messages, 0, tokenize(messages))
