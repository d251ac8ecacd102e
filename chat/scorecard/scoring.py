"""Scoring one case's answers: pure functions of the delivered text (and bot.done's flags).

Every answer is held to the language, loop and length rules; the last answer of a case also
to its expectation (questions.EXPECTATIONS) and its facts. The text the customer read is what
counts: a guard's finish reason is recorded, but an answer is not right because a flag says
so. The one flag taken at its word is `offer_human`: the product showed a "talk to a human"
button, which is an offer whatever the text says.
"""

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import regex

from chat.scorecard import phrases, questions
from chat.scorecard.questions import Case
from chat.scorecard.records import ANSWERED, HANDOFF, Answer, AnswerChecks, CaseScore


@dataclass(frozen=True)
class LengthLimits:
    """The longest answer a customer should have to read in a chat window."""

    max_han_chars: int = 150  # Chinese answers: Han characters
    max_words: int = 100  # other answers: words


# --- normalising ------------------------------------------------------------------------------

_HAN = regex.compile(r"\p{Han}")
# Every dash and range mark a model or a fact may use, as one hyphen ("1–2", "1—2", "1~2").
_DASHES = re.compile("[\u2010-\u2015\u2212\ufe58\ufe63~\u301c]")
_APOSTROPHES = re.compile("[\u2018\u2019\u02bc\u0060\u00b4]")
# A range between two figures however it is written: "1 - 2", "1 to 2", "1至2", "1到2".
_RANGE = re.compile(r"(\d)\s*(?:-|to|至|到)\s*(\d)")
_SPACE_BY_CJK = regex.compile(
    r"\s+(?=[\p{Han}\u3000-\u303f\uff00-\uffef])"
    r"|(?<=[\p{Han}\u3000-\u303f\uff00-\uffef])\s+"
)
_MARKUP = re.compile(r"[*`#>|]")  # markdown emphasis, code, headings, quotes, tables


def normalise(text: str) -> str:
    """The form answers and facts are compared in: full-width letters, digits and
    punctuation as half-width (NFKC), case-folded, one dash and one apostrophe, markdown
    marks gone, ranges as "1-2", white space as one space and none next to Chinese."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _DASHES.sub("-", text)
    text = _APOSTROPHES.sub("'", text)
    text = _MARKUP.sub(" ", text)
    text = re.sub(r"€\s+(?=\d)", "€", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = _RANGE.sub(r"\1-\2", text)
    return _SPACE_BY_CJK.sub("", text)


# --- facts ------------------------------------------------------------------------------------


def _wording_pattern(wording: str) -> re.Pattern:
    """A wording found only as a whole: "30 days" not inside "130 days", "ups" not inside
    "groups". Chinese has no word boundaries to require."""
    norm = normalise(wording)
    start = r"(?<![a-z0-9])" if norm[:1].isascii() and norm[:1].isalnum() else ""
    end = r"(?![a-z0-9])" if norm[-1:].isascii() and norm[-1:].isalnum() else ""
    return re.compile(start + re.escape(norm) + end)


def fact_found(text: str, wordings: tuple[str, ...] | list[str]) -> bool:
    """Whether any accepted wording of one fact is in `text`."""
    norm = normalise(text)
    return any(_wording_pattern(w).search(norm) for w in wordings)


def missing_facts(text: str, facts) -> list[tuple[str, ...]]:
    return [tuple(fact) for fact in facts if not fact_found(text, fact)]


# --- language ---------------------------------------------------------------------------------

_LATIN_WORD = regex.compile(r"[\p{Latin}]+")


def han_share(text: str) -> float:
    """Han characters among Han characters and Latin words. Words, not letters: a correct
    Chinese answer names Visa, Mastercard and PayPal, and letters would outweigh it."""
    han = len(_HAN.findall(text))
    words = len(_LATIN_WORD.findall(text))
    return han / (han + words) if han + words else 0.0


def language_ok(text: str, language: str) -> bool:
    """A Chinese case needs a predominantly Han answer; any other must not be mostly Han."""
    share = han_share(text)
    if language.lower().startswith("zh"):
        return share >= 0.5
    return share <= 0.5


# --- loops ------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"[.!?。;\n]+")
LOOP_REPEATS = 3  # a word 4-gram or a 6-character run this often is a loop
_MIN_SENTENCE_CHARS = 12  # shorter sentences ("Thank you.") may well recur


def find_loop(text: str) -> str | None:
    """What repeats, when the text loops: a word 4-gram or a run of 6 Chinese characters 3+
    times, or a whole sentence twice. Independent of any guard in the product, so a guard
    that misses a loop is caught here."""
    norm = normalise(text)
    words = [w for w in _WORD.findall(norm) if not _HAN.search(w)]
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    if grams:
        gram, count = grams.most_common(1)[0]
        if count >= LOOP_REPEATS:
            return f"“{' '.join(gram)}” ×{count}"
    dense = re.sub(r"\s+", "", norm)
    runs = Counter(
        dense[i : i + 6] for i in range(len(dense) - 5) if len(_HAN.findall(dense[i : i + 6])) >= 4
    )
    if runs:
        run, count = runs.most_common(1)[0]
        if count >= LOOP_REPEATS:
            return f"“{run}” ×{count}"
    sentences = Counter(
        s.strip()
        for s in _SENTENCE_END.split(norm)
        if len(re.sub(r"\s+", "", s)) >= _MIN_SENTENCE_CHARS
    )
    if sentences:
        sentence, count = sentences.most_common(1)[0]
        if count >= 2:
            return f"sentence “{sentence}” ×{count}"
    return None


# --- length -----------------------------------------------------------------------------------


def answer_length(text: str, language: str) -> int:
    """Han characters in a Chinese case, words in any other."""
    if language.lower().startswith("zh"):
        return len(_HAN.findall(text))
    return sum(1 for word in text.split() if re.search(r"\w", word))


def check_answer(text: str, language: str, limits: LengthLimits = LengthLimits()) -> AnswerChecks:
    length = answer_length(text, language)
    limit = limits.max_han_chars if language.lower().startswith("zh") else limits.max_words
    return AnswerChecks(
        language_ok=bool(text.strip()) and language_ok(text, language),
        han_share=round(han_share(text), 3),
        loop=find_loop(text),
        length=length,
        over_limit=length > limit,
    )


# --- a whole case -----------------------------------------------------------------------------


def score_case(
    case: Case, answers: list[Answer], limits: LengthLimits = LengthLimits()
) -> CaseScore:
    reasons: list[str] = []
    checks: list[AnswerChecks | None] = []
    for number, answer in enumerate(answers, start=1):
        prefix = f"answer {number} of {len(case.turns)}: " if len(case.turns) > 1 else ""
        checks.append(None)
        if answer.outcome != ANSWERED:
            reasons.append(prefix + _not_answered(answer))
            continue
        if answer.model_failed:
            reasons.append(f"{prefix}no model answer ({answer.finish_reason})")
            continue
        check = checks[-1] = check_answer(answer.text, case.language, limits)
        reasons += [prefix + why for why in _rule_failures(check, case, answer, limits)]
    if len(answers) < len(case.turns):
        reasons.append(f"only {len(answers)} of {len(case.turns)} turns were answered")

    last = answers[-1] if answers and len(answers) == len(case.turns) else None
    # Only an answer the model (or a guard) gave is judged on what it says: without one the
    # case has failed already, and the fallback rules' apology must not count as an offer.
    answered = last is not None and last.outcome == ANSWERED and not last.model_failed
    text = normalise(last.text) if answered else ""
    offered = answered and (last.offer_human or phrases.offers_human(text))
    if last is not None and last.outcome == HANDOFF:
        offered = True  # the product queued the customer for a human at once
    missing = missing_facts(text, case.facts)
    for fact in missing if answered else []:
        shown = " / ".join(f"“{w}”" for w in fact[:3])
        more = f" (or {len(fact) - 3} other wordings)" if len(fact) > 3 else ""
        reasons.append(f"missing fact: {shown}{more}")
    flags = {
        "offers_human": bool(offered),
        "apologises": phrases.apologises(text),
        "says_not_covered": phrases.says_not_covered(text),
        "asks_for_details": phrases.asks_for_details(text),
        "greets": phrases.greets(text),
    }
    behaviour_ok, why = _behaviour(case.expect, text, flags) if answered else (False, None)
    if why:
        reasons.append(why)
    return CaseScore(
        passed=not reasons,
        reasons=reasons,
        answers=checks,
        facts_expected=len(case.facts),
        facts_found=len(case.facts) - len(missing),
        missing_facts=missing,
        behaviour_ok=behaviour_ok,
        **flags,
    )


def _not_answered(answer: Answer) -> str:
    return {
        HANDOFF: "the message asked for a human (a hand-off phrase): the bot did not answer",
        "silent": "a human holds the conversation: the bot did not answer",
    }.get(answer.outcome, "no answer came in time")


def _rule_failures(
    check: AnswerChecks, case: Case, answer: Answer, limits: LengthLimits
) -> list[str]:
    failures = []
    if not answer.text.strip():
        failures.append("empty answer")
    elif not check.language_ok:
        failures.append(f"wrong language: {check.han_share:.0%} Han in a {case.language} answer")
    if check.loop:
        failures.append(f"loops: {check.loop}")
    if check.over_limit:
        unit, limit = (
            ("Han characters", limits.max_han_chars)
            if case.is_chinese
            else ("words", limits.max_words)
        )
        failures.append(f"too long: {check.length} {unit} (limit {limit})")
    return failures


def _behaviour(expect: str, text: str, flags: dict) -> tuple[bool | None, str | None]:
    """Whether the last answer does what its case expects; the reason when it does not."""
    if expect == questions.ANSWER:
        return None, None  # its facts decide
    if expect == questions.NOT_COVERED:
        lacks = [
            what
            for what, ok in (
                ("does not say the help centre lacks the answer", flags["says_not_covered"]),
                ("offers no human", flags["offers_human"]),
            )
            if not ok
        ]
    elif expect == questions.COMPLAINT:
        lacks = [
            what
            for what, ok in (
                ("no apology", flags["apologises"]),
                ("offers no human", flags["offers_human"]),
            )
            if not ok
        ]
    elif expect == questions.GREETING:
        lacks = [] if flags["greets"] else ["does not greet or offer help"]
        figure = phrases.figure_in(text)
        if figure:
            lacks.append(f"states a figure (“{figure}”) a greeting has no ground for")
    elif expect == questions.ASK_DETAILS:
        lacks = (
            []
            if flags["asks_for_details"]
            else ["does not ask for the order number or e-mail address"]
        )
    else:
        raise ValueError(f"unknown expectation {expect!r}")
    if lacks:
        return False, f"expected {expect}: " + "; ".join(lacks)
    return True, None
