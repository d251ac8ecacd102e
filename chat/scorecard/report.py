"""The scorecard's figures: a summary dict (for `--json` and the benchmark page), the text
report the command prints, and the JSON document with every case.

Percentages are 0–100 with one decimal, None where nothing was there to count (a category
without answerable questions has no "facts present").
"""

import statistics
from collections import Counter
from dataclasses import asdict

from chat.scorecard import questions
from chat.scorecard.records import ANSWERED, CaseResult
from chat.scorecard.scoring import LengthLimits


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def measures(results: list[CaseResult]) -> dict:
    """The key measures of a group of cases (all, a category, a language)."""
    answers = [a for r in results for a in r.answers]
    checks = [c for r in results for c in r.score.answers if c is not None]
    answerable = [r for r in results if r.case.expect == questions.ANSWER]
    not_covered = [r for r in results if r.case.expect == questions.NOT_COVERED]
    complaints = [r for r in results if r.case.expect == questions.COMPLAINT]
    passed = sum(r.score.passed for r in results)
    facts_expected = sum(r.score.facts_expected for r in answerable)
    return {
        "cases": len(results),
        "passed": passed,
        "pass_rate_pct": _pct(passed, len(results)),
        "answers": len(answers),
        "language_right_pct": _pct(sum(c.language_ok for c in checks), len(checks)),
        "loops": sum(c.loop is not None for c in checks),
        "over_limit": sum(c.over_limit for c in checks),
        "answerable_cases": len(answerable),
        "facts_present_pct": _pct(
            sum(r.score.facts_found == r.score.facts_expected for r in answerable), len(answerable)
        ),
        "facts_found_pct": _pct(sum(r.score.facts_found for r in answerable), facts_expected),
        "not_covered_cases": len(not_covered),
        "not_covered_handled_pct": _pct(
            sum(bool(r.score.behaviour_ok) for r in not_covered), len(not_covered)
        ),
        "complaint_cases": len(complaints),
        "complaints_offered_human_pct": _pct(
            sum(r.score.offers_human for r in complaints), len(complaints)
        ),
        "median_answer_ms": _median(
            [a.wall_ms for a in answers if a.outcome == ANSWERED and a.wall_ms is not None]
        ),
        "median_first_text_ms": _median(
            [a.first_text_ms for a in answers if a.first_text_ms is not None]
        ),
        "no_model_answer": sum(a.outcome != ANSWERED or a.model_failed for a in answers),
        "fallbacks": sum(a.fallback for a in answers),
        "offer_human_flags": sum(a.offer_human for a in answers),
        "guards": dict(Counter(g for a in answers for g in a.guards_fired).most_common()),
        "finish_reasons": dict(
            Counter(a.finish_reason or a.outcome for a in answers).most_common()
        ),
    }


def summarize(
    results: list[CaseResult],
    *,
    limits: LengthLimits = LengthLimits(),
    models: dict[str, int] | None = None,
    profile: dict | None = None,
) -> dict:
    """Everything the headline and the tables show, as a dict (for the benchmark, and the
    `summary` of the JSON file)."""
    by_category: dict[str, list[CaseResult]] = {}
    by_language: dict[str, list[CaseResult]] = {}
    for result in results:
        by_category.setdefault(result.case.category, []).append(result)
        by_language.setdefault(result.case.language, []).append(result)
    return {
        **measures(results),
        "models": models or {},  # who wrote the answers: model name → answers
        "profile": profile or {},
        "limits": asdict(limits),
        "by_category": {name: measures(group) for name, group in by_category.items()},
        "by_language": {name: measures(group) for name, group in by_language.items()},
        "failing": [r.case.id for r in results if not r.score.passed],
    }


# --- the text report -------------------------------------------------------------------------


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} %"


def _seconds(ms: float | None) -> str:
    return "–" if ms is None else f"{ms / 1000:.1f} s"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _counts(counter: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.items()) or "none"


def headline(summary: dict) -> list[str]:
    s, limits = summary, summary["limits"]
    rows = [
        ("passed", f"{s['passed']} of {_count(s['cases'], 'case')} ({_share(s['pass_rate_pct'])})"),
        ("language right", f"{_share(s['language_right_pct'])} of {s['answers']} answers"),
        ("loops", f"{s['loops']} of {s['answers']} answers"),
        (
            "over the limit",
            f"{s['over_limit']} of {s['answers']} answers (limit "
            f"{limits['max_han_chars']} Han characters, {limits['max_words']} "
            "words)",
        ),
        (
            "not covered handled",
            f"{_share(s['not_covered_handled_pct'])} of {s['not_covered_cases']} cases",
        ),
        (
            "complaints offered a human",
            f"{_share(s['complaints_offered_human_pct'])} of {s['complaint_cases']} cases",
        ),
        (
            "expected facts present",
            f"{_share(s['facts_present_pct'])} of "
            f"{s['answerable_cases']} answerable cases (single facts: "
            f"{_share(s['facts_found_pct'])})",
        ),
        (
            "median answer time",
            f"{_seconds(s['median_answer_ms'])} (first text {_seconds(s['median_first_text_ms'])})",
        ),
        ("guards fired", _counts(s["guards"])),
        ("finish reasons", _counts(s["finish_reasons"])),
        (
            "no model answer",
            f"{s['no_model_answer']} of {s['answers']} answers (a deadline, a "
            "worker failure or overload, a hand-off, nothing in time)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    return [f"  {name:<{width}}  {value}" for name, value in rows]


def table(title: str, groups: dict[str, dict]) -> list[str]:
    """One row a group: cases, passed, language right, loops, over the limit, answerable
    cases with every fact, median answer time."""
    width = max([len(title), *map(len, groups)])
    lines = [
        f"  {title:<{width}}  {'cases':>5}  {'passed':>6}  {'pass':>5}  {'language':>8}  "
        f"{'loops':>5}  {'over':>4}  {'facts':>5}  {'median':>6}"
    ]
    for name, m in groups.items():
        lines.append(
            f"  {name:<{width}}  {m['cases']:>5}  {m['passed']:>6}  "
            f"{_share(m['pass_rate_pct']):>5}  {_share(m['language_right_pct']):>8}  "
            f"{m['loops']:>5}  {m['over_limit']:>4}  {_share(m['facts_present_pct']):>5}  "
            f"{_seconds(m['median_answer_ms']):>6}"
        )
    return lines


def failures(results: list[CaseResult]) -> list[str]:
    """Every failing case: its question(s), what the customer read, and why it failed."""
    lines = []
    for result in results:
        if result.score.passed:
            continue
        case = result.case
        lines.append(f"  {case.id} [{case.category}, {case.language}, expects {case.expect}]")
        for number, question in enumerate(case.turns):
            lines.append(f"    Q: {question}")
            if number < len(result.answers):
                answer = result.answers[number]
                text = " ".join(answer.text.split()) or f"({answer.outcome})"
                flags = [answer.finish_reason or answer.outcome]
                flags += ["fallback"] if answer.fallback else []
                flags += ["offer_human"] if answer.offer_human else []
                lines.append(f"    A: {text}  [{', '.join(flags)}]")
        lines += [f"    why: {reason}" for reason in result.score.reasons]
    return lines


def render(summary: dict, results: list[CaseResult]) -> str:
    languages = ", ".join(f"{m['cases']} {name}" for name, m in summary["by_language"].items())
    profile = summary.get("profile") or {}
    lines = [
        f"Answer scorecard: {_count(summary['cases'], 'case')} ({languages}), "
        f"{_count(summary['answers'], 'answer')}"
    ]
    if summary.get("models"):
        lines.append(f"Answered by: {_counts(summary['models'])}")
    if profile:
        lines.append(
            f"Bot profile: {profile.get('name')} (when no article covers a question: "
            f"{profile.get('when_no_knowledge')})"
        )
    lines += [
        "",
        "Headline",
        *headline(summary),
        "",
        *table("category", summary["by_category"]),
        "",
        *table("language", summary["by_language"]),
    ]
    failing = failures(results)
    lines += ["", f"Failing cases ({len(summary['failing'])})" if failing else "Every case passed."]
    lines += failing
    return "\n".join(lines)


# --- the JSON document -----------------------------------------------------------------------


def case_record(result: CaseResult) -> dict:
    case, score = result.case, result.score
    answers = []
    for answer, checks in zip(result.answers, score.answers, strict=True):
        record = asdict(answer)
        record["guards_fired"] = answer.guards_fired
        record["checks"] = None if checks is None else asdict(checks)
        answers.append(record)
    return {
        "id": case.id,
        "category": case.category,
        "language": case.language,
        "expect": case.expect,
        "turns": list(case.turns),
        "facts": [list(fact) for fact in case.facts],
        "conversation_id": result.conversation_id,
        "passed": score.passed,
        "reasons": score.reasons,
        "answers": answers,
        "score": {
            "facts_expected": score.facts_expected,
            "facts_found": score.facts_found,
            "missing_facts": [list(fact) for fact in score.missing_facts],
            "behaviour_ok": score.behaviour_ok,
            "offers_human": score.offers_human,
            "apologises": score.apologises,
            "says_not_covered": score.says_not_covered,
            "asks_for_details": score.asks_for_details,
            "greets": score.greets,
        },
    }


def document(summary: dict, results: list[CaseResult], *, run: dict) -> dict:
    """What `--json OUT` writes: how it was run, the summary, and every case."""
    return {"run": run, "summary": summary, "cases": [case_record(r) for r in results]}
