"""`python manage.py eval_answers [FILE]`: the answer scorecard.

Asks every case of FILE (default: the sample set, chat/knowledge/sample/scorecard.jsonl)
through the live answer path (retrieval, prompt, worker, guards), a fresh conversation each,
scores what the customer read, and prints the figures by category and language and every
failing case with the reason. Needs Redis and a running inference worker (`make run`, or
`manage.py run_inference_worker`), and for the sample set the sample help centre
(`manage.py import_knowledge --sample`). See chat/scorecard/ for the rules.
"""

import asyncio
import datetime as dt
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from chat import selectors
from chat.scorecard import questions, report, runner, scoring
from chat.scorecard import selectors as scorecard_selectors


class Command(BaseCommand):
    help = "Ask a question set through the live answer path and score the answers."

    def add_arguments(self, parser):
        parser.add_argument(
            "file",
            nargs="?",
            default=str(questions.SAMPLE_SET),
            metavar="FILE",
            help="JSONL question set (default: the sample set).",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=4,
            metavar="N",
            help="cases asked at once (default 4)",
        )
        parser.add_argument(
            "--json",
            metavar="OUT",
            help="write every case (turns, answers, finish reasons, scores, "
            "timings) and the summary to this JSON file",
        )
        parser.add_argument("--limit", type=int, metavar="N", help="ask only the first N cases")
        parser.add_argument(
            "--only",
            action="append",
            metavar="CATEGORY",
            help="ask only this category's cases (repeat, or comma-separate)",
        )
        parser.add_argument(
            "--site",
            metavar="SITE_KEY",
            help="ask as this site's customers (default: no site, as the demo "
            "page; the sample help centre is for all sites)",
        )
        limits = scoring.LengthLimits()
        parser.add_argument(
            "--max-han",
            type=int,
            default=limits.max_han_chars,
            metavar="N",
            help=f"longest Chinese answer in Han characters (default {limits.max_han_chars})",
        )
        parser.add_argument(
            "--max-words",
            type=int,
            default=limits.max_words,
            metavar="N",
            help=f"longest other answer in words (default {limits.max_words})",
        )

    def handle(self, *args, **options):
        for name in ("concurrency", "limit", "max_han", "max_words"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        path = Path(options["file"])
        only = [
            name.strip()
            for value in options["only"] or []
            for name in value.split(",")
            if name.strip()
        ]
        try:
            cases = questions.select(
                questions.load_cases(path), only=only or None, limit=options["limit"]
            )
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if not cases:
            raise CommandError("No case to ask.")
        site = self._site(options["site"])
        if path.resolve() == questions.SAMPLE_SET and not scorecard_selectors.sample_loaded():
            raise CommandError(
                "The sample help centre is not loaded, so its questions have "
                "nothing to be answered from: run `manage.py import_knowledge "
                "--sample` first."
            )
        limits = scoring.LengthLimits(
            max_han_chars=options["max_han"], max_words=options["max_words"]
        )
        started = dt.datetime.now(dt.UTC)
        progress = self._progress if options["verbosity"] > 0 else None
        try:
            results = asyncio.run(
                runner.evaluate(
                    cases,
                    site=site,
                    concurrency=options["concurrency"],
                    length_limits=limits,
                    run_id=f"{started:%Y-%m-%dT%H:%M:%SZ}",
                    progress=progress,
                )
            )
        except runner.NoWorker:
            raise CommandError(
                "No inference worker is live, so every answer would be the fallback's. Start "
                "one with `.venv/bin/python manage.py run_inference_worker` (or the whole "
                "desk with `make run`), wait until it has loaded the model, and run this "
                "again."
            ) from None
        except runner.WorkerLost as exc:
            raise CommandError(f"Stopped: {exc}. Start the worker again and rerun.") from None
        except (RedisError, OSError) as exc:  # Redis refused or unreachable
            raise CommandError(
                f"Cannot reach Redis at {settings.REDIS_URL} ({exc}): start "
                "the desk with `make run`, or set REDIS_URL."
            ) from None

        profile = scorecard_selectors.profile_for_site(site)
        summary = report.summarize(
            results,
            limits=limits,
            models=scorecard_selectors.answer_models(
                [a.message_id for r in results for a in r.answers if a.message_id]
            ),
            profile={"name": profile.name, "when_no_knowledge": profile.when_no_knowledge},
        )
        self.stdout.write(report.render(summary, results))
        if options["json"]:
            seconds = (dt.datetime.now(dt.UTC) - started).total_seconds()
            run = {
                "file": str(path),
                "site": options["site"] or "",
                "started": started.isoformat(),
                "seconds": round(seconds, 1),
                "concurrency": options["concurrency"],
                "only": only,
                "limit": options["limit"],
            }
            out = Path(options["json"])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(
                json.dumps(
                    report.document(summary, results, run=run), ensure_ascii=False, indent=1
                ),
                encoding="utf-8",
            )
            self.stdout.write(f"Written: {out}")

    def _progress(self, result, done: int, total: int) -> None:
        # One line a case, on stderr: the report on stdout stays clean to pipe or save.
        verdict = "pass" if result.score.passed else "FAIL"
        seconds = sum(a.wall_ms or 0 for a in result.answers) / 1000
        self.stderr.write(
            f"[{done:>{len(str(total))}}/{total}] {verdict} {result.case.id} ({seconds:.1f} s)",
            style_func=lambda text: text,
        )

    @staticmethod
    def _site(site_key: str | None):
        if not site_key:
            return None
        site = selectors.site_by_key(site_key=site_key, active_only=False)
        if site is None:
            raise CommandError(f"No site with key {site_key!r} (see admin, Sites).")
        return site
