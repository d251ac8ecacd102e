"""`python manage.py eval_knowledge FILE`: how well retrieval finds the right article.

FILE: CSV (header row) or JSONL with `question`, `expected` (an article's slug or title; null
or empty when the question is out of scope: no passage addresses its topic, and the right
result is no hit), and optionally `language` (else guessed from the question) and `site` (a
site key). Prints recall@1 and recall@3 over the answerable questions, the share of the out-of-
scope ones that got no hit, each one that got a hit anyway, and the time of one retrieval
(mean, p50, p99). Runs against the articles in the database, as customers would.

Both figures matter as much: a hit tells the model that a passage covers the question, so an
out-of-scope question with a hit gets an answer made up around an unrelated passage instead of
the bot profile's "not covered" path (a human, or a general answer).
"""

import csv
import json
import statistics
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chat import selectors
from chat.knowledge import retrieval
from chat.knowledge.segment import guess_language, primary_language

EXPECTED_COLUMNS = ("expected", "expected_article", "article", "slug", "title")


def read_questions(path: Path) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    elif path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    else:
        raise CommandError(f"{path}: give a .csv or .jsonl file")
    questions = []
    for number, row in enumerate(rows, start=1):
        row = {str(k).strip().lower(): str(v or "").strip() for k, v in row.items()}
        if not row.get("question"):
            raise CommandError(f"{path}: row {number} has no question")
        expected = next((row[c] for c in EXPECTED_COLUMNS if c in row), "")
        questions.append(
            {
                "question": row["question"],
                "expected": expected,
                "language": row.get("language") or guess_language(row["question"]),
                "site": row.get("site", ""),
            }
        )
    return questions


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def is_match(hit: retrieval.Hit, expected: str, language: str) -> bool:
    return expected.casefold() in (
        hit.slug.casefold(),
        hit.title.casefold(),
    ) and hit.language == primary_language(language)


class Command(BaseCommand):
    help = (
        "Measure retrieval on a question set: recall@1, recall@3, the share of out-of-scope "
        "questions with no hit, and time per search."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", metavar="FILE", help="CSV or JSONL question set.")
        parser.add_argument(
            "--site",
            metavar="SITE_KEY",
            help="Ask as this site's customers (default: a conversation of no "
            "site, which sees the articles for all sites).",
        )

    def handle(self, *args, **options):
        questions = read_questions(Path(options["file"]))
        if not questions:
            raise CommandError("The question set is empty.")
        sites = {
            key: self._site_id(key)
            for key in {options["site"] or ""} | {q["site"] for q in questions}
        }

        started = time.perf_counter()
        index = retrieval.process_index_sync()  # built once, not in the timings
        build_ms = (time.perf_counter() - started) * 1000
        if index.empty:
            self.stderr.write(
                "The knowledge base has no published article: import some "
                "first (import_knowledge --sample for the sample set)."
            )

        answerable = [q for q in questions if q["expected"]]
        at1 = at3 = no_hit = 0
        false_hits: list[str] = []
        times: list[float] = []
        for q in questions:
            started = time.perf_counter()
            hits = retrieval.search_sync(
                question=q["question"],
                site_id=sites[q["site"] or options["site"] or ""],
                language=q["language"],
                limit=3,
            )
            times.append((time.perf_counter() - started) * 1000)
            found = [is_match(hit, q["expected"], q["language"]) for hit in hits]
            if not q["expected"]:
                no_hit += not hits
                if hits:
                    false_hits.append(
                        f"  hit for out-of-scope {q['question']!r}: "
                        f"{hits[0].slug}/{hits[0].language} "
                        f"{hits[0].heading or hits[0].title!r} ({hits[0].score})"
                    )
                continue
            at1 += any(found[:1])
            at3 += any(found[:3])
            if not any(found[:1]) and options["verbosity"] >= 2:
                got = ", ".join(f"{h.slug}/{h.language} ({h.score})" for h in hits) or "no hit"
                self.stdout.write(f"  miss@1 {q['question']!r} (expected {q['expected']}): {got}")

        out_of_scope = len(questions) - len(answerable)
        n = max(len(answerable), 1)
        self.stdout.write(
            f"questions: {len(questions)} ({len(answerable)} answerable, {out_of_scope} "
            "out of scope: no article covers them)\n"
            f"recall@1: {at1 / n:.3f} ({at1}/{len(answerable)})\n"
            f"recall@3: {at3 / n:.3f} ({at3}/{len(answerable)})\n"
            f"out of scope, no hit: {no_hit / max(out_of_scope, 1):.3f} "
            f"({no_hit}/{out_of_scope})\n"
            + "".join(line + "\n" for line in false_hits)
            + f"retrieval time: mean {statistics.fmean(times):.2f} ms, "
            f"p50 {percentile(times, 0.5):.2f} ms, p99 {percentile(times, 0.99):.2f} ms "
            f"(index of {len(index)} passages built in {build_ms:.0f} ms)"
        )

    @staticmethod
    def _site_id(site_key: str) -> int | None:
        if not site_key:
            return None
        site = selectors.site_by_key(site_key=site_key, active_only=False)
        if site is None:
            raise CommandError(f"No site with key {site_key!r}.")
        return site.pk
