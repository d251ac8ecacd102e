"""The scorecard's question set: one JSON object a line, validated as it is read.

    {"id": "ship-de-en", "category": "paraphrase", "language": "en",
     "turns": ["How long does delivery take to Germany?"], "expect": "answer",
     "facts": [["1–2 business days", "one to two business days"]]}

- `turns`: what the customer writes, one message each, in one fresh conversation. The last
  turn's answer is the one scored in full; earlier answers must only keep to the language,
  loop and length rules (they set up a follow-up such as "And to Germany?").
- `expect`: what a good last answer does (EXPECTATIONS).
- `facts`: each fact a list of accepted wordings, any one of which counts; every fact must be
  in the answer. Required for `answer`, optional for the others, never for `greeting` (a
  greeting has nothing to state).
- `note` (optional): why the case expects what it does, for whoever edits the set.

A mistake in the file is reported with its line number before anything is asked: a typo in a
key would otherwise turn a case into one that cannot fail.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SET = Path(__file__).resolve().parents[1] / "knowledge" / "sample" / "scorecard.jsonl"

ANSWER = "answer"  # answers from the help centre: the facts are in it
NOT_COVERED = "not_covered"  # says the help centre does not cover it, offers a human
COMPLAINT = "complaint"  # apologises and offers a human
GREETING = "greeting"  # greets back or offers help, states nothing it was not asked
ASK_DETAILS = "ask_details"  # asks for the order number or e-mail address it needs
EXPECTATIONS = (ANSWER, NOT_COVERED, COMPLAINT, GREETING, ASK_DETAILS)

_KEYS = {"id", "category", "language", "turns", "expect", "facts", "note"}
_REQUIRED = ("id", "category", "language", "turns", "expect")
_CATEGORY = re.compile(r"[a-z][a-z0-9_]*")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    language: str  # BCP 47, as a conversation stores it: "en", "zh-CN"
    turns: tuple[str, ...]
    expect: str
    facts: tuple[tuple[str, ...], ...] = ()
    note: str = ""

    @property
    def is_chinese(self) -> bool:
        return self.language.lower().startswith("zh")


class CaseError(ValueError):
    """A line of the question set that is not a valid case."""

    def __init__(self, path: Path | str, line: int, problem: str):
        super().__init__(f"{path}, line {line}: {problem}")
        self.line = line
        self.problem = problem


def load_cases(path: Path | str) -> list[Case]:
    """Every case of the file, in order. Raises CaseError (the first problem found) or
    OSError when the file cannot be read."""
    path = Path(path)
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = parse_case(line)
        except ValueError as exc:
            raise CaseError(path, number, str(exc)) from None
        if case.id in seen:
            raise CaseError(path, number, f"id {case.id!r} is used on line {seen[case.id]} too")
        seen[case.id] = number
        cases.append(case)
    if not cases:
        raise CaseError(path, 1, "the file has no case")
    return cases


def parse_case(line: str) -> Case:
    """One line as a Case; ValueError says what is wrong with it."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))}; a case has {', '.join(sorted(_KEYS))}"
        )
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ValueError(f"missing {', '.join(map(repr, missing))}")
    case_id = _text(raw, "id")
    category = _text(raw, "category")
    if not _CATEGORY.fullmatch(category):
        raise ValueError(f"category {category!r}: lower-case letters, digits and _ only")
    language = _text(raw, "language")
    if not _LANGUAGE.fullmatch(language):
        raise ValueError(f"language {language!r} is not a BCP 47 tag such as en or zh-CN")
    turns = raw["turns"]
    if (
        not isinstance(turns, list)
        or not turns
        or not all(isinstance(t, str) and t.strip() for t in turns)
    ):
        raise ValueError("'turns' must be a list of one or more non-empty strings")
    expect = _text(raw, "expect")
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect {expect!r} is none of {', '.join(EXPECTATIONS)}")
    facts = _facts(raw.get("facts", []))
    if expect == ANSWER and not facts:
        raise ValueError("an 'answer' case needs at least one fact (else it cannot fail)")
    if expect == GREETING and facts:
        raise ValueError("a 'greeting' case states no facts")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise ValueError("'note' must be a string")
    return Case(
        id=case_id,
        category=category,
        language=language,
        turns=tuple(t.strip() for t in turns),
        expect=expect,
        facts=facts,
        note=note,
    )


def _text(raw: dict, key: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key!r} must be a non-empty string")
    return value.strip()


def _facts(value) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list):
        raise ValueError("'facts' must be a list of lists of accepted wordings")
    facts = []
    for number, fact in enumerate(value, start=1):
        if (
            not isinstance(fact, list)
            or not fact
            or not all(isinstance(w, str) and w.strip() for w in fact)
        ):
            raise ValueError(
                f"fact {number} must be a non-empty list of non-empty strings "
                "(its accepted wordings)"
            )
        facts.append(tuple(w.strip() for w in fact))
    return tuple(facts)


def select(
    cases: list[Case], *, only: list[str] | None = None, limit: int | None = None
) -> list[Case]:
    """The cases of the categories in `only` (all when None), the first `limit` of them.
    ValueError names the categories there are when one in `only` has no case."""
    if only:
        known = sorted({case.category for case in cases})
        unknown = [name for name in only if name not in known]
        if unknown:
            raise ValueError(
                f"no case of category {', '.join(map(repr, unknown))} "
                f"(categories: {', '.join(known)})"
            )
        cases = [case for case in cases if case.category in only]
    return cases[:limit] if limit is not None else cases
