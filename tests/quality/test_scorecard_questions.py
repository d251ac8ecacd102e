"""The scorecard's question set: the sample set is complete and valid, and a broken line is
refused with its line number and what is wrong."""

import json
from collections import Counter

import pytest
from django.conf import settings

from chat.handoff_phrases import asks_for_human
from chat.scorecard import questions
from chat.scorecard.questions import CaseError, load_cases

SAMPLE_CATEGORIES = {
    "paraphrase",
    "not_offered",
    "out_of_scope",
    "complaint",
    "greeting",
    "needs_details",
    "follow_up",
}


@pytest.fixture(scope="module")
def sample():
    return load_cases(questions.SAMPLE_SET)


def test_the_sample_set_is_large_and_balanced(sample):
    assert len(sample) >= 80
    languages = Counter("zh" if case.is_chinese else case.language for case in sample)
    assert set(languages) == {"en", "zh"}
    assert abs(languages["en"] - languages["zh"]) <= len(sample) * 0.1
    assert sum(len(case.turns) == 2 for case in sample) >= 10


def test_the_sample_set_has_every_category_and_expectation_in_both_languages(sample):
    present = {(case.category, "zh" if case.is_chinese else "en") for case in sample}
    assert {
        (category, language) for category in SAMPLE_CATEGORIES for language in ("en", "zh")
    } <= present
    assert {case.expect for case in sample} == set(questions.EXPECTATIONS)


def test_the_sample_set_is_consistent(sample):
    for case in sample:
        if case.category in ("paraphrase", "not_offered", "follow_up"):
            assert case.expect == "answer" and case.facts, case.id
        if case.category == "follow_up":
            assert len(case.turns) == 2, case.id
        if case.category == "out_of_scope":
            assert case.expect == "not_covered", case.id
    # A question whose answer is a "no" (Bitcoin) is answered, not "not covered": the payment
    # article lists every method there is.
    assert next(c for c in sample if c.id == "pay-bitcoin-en").expect == "answer"


def test_no_sample_turn_asks_for_a_human(sample):
    """Such a turn is queued for a person and never answered: the case could not pass."""
    asking = [
        turn
        for case in sample
        for turn in case.turns
        if asks_for_human(turn, settings.CHAT["HANDOFF_PHRASES"])
    ]
    assert asking == []


def write(tmp_path, *lines) -> str:
    path = tmp_path / "set.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines),
        encoding="utf-8",
    )
    return path


GOOD = {
    "id": "a",
    "category": "paraphrase",
    "language": "en",
    "turns": ["Hi?"],
    "expect": "answer",
    "facts": [["x"]],
}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ({**GOOD, "fact": [["x"]]}, "unknown key(s) 'fact'"),
        ({k: v for k, v in GOOD.items() if k != "turns"}, "missing 'turns'"),
        ({**GOOD, "turns": []}, "'turns' must be a list"),
        ({**GOOD, "turns": ["ok", ""]}, "'turns' must be a list"),
        ({**GOOD, "expect": "answered"}, "expect 'answered' is none of"),
        ({**GOOD, "facts": []}, "an 'answer' case needs at least one fact"),
        ({**GOOD, "facts": [[]]}, "fact 1 must be a non-empty list"),
        ({**GOOD, "facts": ["1-2 days"]}, "fact 1 must be a non-empty list"),
        ({**GOOD, "language": "english"}, "language 'english' is not a BCP 47 tag"),
        ({**GOOD, "category": "Para phrase"}, "category 'Para phrase'"),
        ({**GOOD, "expect": "greeting"}, "a 'greeting' case states no facts"),
    ],
)
def test_a_broken_case_names_its_line_and_problem(tmp_path, line, problem):
    path = write(tmp_path, GOOD | {"id": "first"}, "", line)
    with pytest.raises(CaseError) as caught:
        load_cases(path)
    assert caught.value.line == 3
    assert f"line 3: {problem}" in str(caught.value)


def test_a_duplicate_id_is_refused(tmp_path):
    with pytest.raises(CaseError, match="line 2: id 'a' is used on line 1 too"):
        load_cases(write(tmp_path, GOOD, GOOD))


def test_select_by_category_and_limit(sample):
    greetings = questions.select(sample, only=["greeting"])
    assert greetings and {case.category for case in greetings} == {"greeting"}
    assert len(questions.select(sample, only=["greeting", "complaint"], limit=3)) == 3
    with pytest.raises(ValueError, match="no case of category 'nope'"):
        questions.select(sample, only=["nope"])
