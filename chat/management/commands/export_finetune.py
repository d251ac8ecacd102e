"""`python manage.py export_finetune --out PATH`: rated bot answers as fine-tuning JSONL.

Formats, selection and scrubbing are described in `chat.finetune`.
"""

import argparse
import contextlib
import datetime as dt
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from chat import finetune, selectors

HELP = """\
Export rated bot answers as JSON Lines for fine-tuning, scrubbed of personal data (e-mail
addresses, phone numbers, runs of 6+ digits, the customer's name; extra patterns from the
PII_PATTERNS setting).

Each line of PATH is {"messages": [system, ...context turns..., user, assistant]}: exactly the
messages the model saw (Message.prompt), then its answer. By default only answers rated
thumbs-up are exported. Playground conversations, fallback and partial answers and answers
without a stored prompt are skipped; identical lines are written once.

A conversation's lines all go to one file, by a hash of its id: PATH gets the training lines,
PATH with ".valid" before its suffix the validation lines (out.jsonl -> out.valid.jsonl).

--pairs PATH writes DPO preference pairs, one for each thumbs-down answer that a human agent
answered next: {"prompt": [system, ..., user], "chosen": "<agent reply>", "rejected": "<bot
answer>"}. The date, site and language filters apply to them; --thumbs and --min-csat do not.
"""


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2025-01-31") from exc


def _fraction(value: str) -> float:
    fraction = float(value)
    if not 0 <= fraction < 1:
        raise argparse.ArgumentTypeError("must be at least 0 and below 1")
    return fraction


def _csat(value: str) -> int:
    score = int(value)
    if not 1 <= score <= 5:
        raise argparse.ArgumentTypeError("CSAT scores run from 1 to 5")
    return score


class Command(BaseCommand):
    help = HELP

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Keep the help's line breaks and examples as written.
        kwargs["formatter_class"] = argparse.RawDescriptionHelpFormatter
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument(
            "--out",
            required=True,
            type=Path,
            metavar="PATH",
            help="Training lines go here, validation lines to PATH with .valid "
            "before the suffix (out.jsonl -> out.valid.jsonl).",
        )
        parser.add_argument(
            "--since",
            type=_date,
            metavar="YYYY-MM-DD",
            help="Answers from this day on (inclusive; days of the TIME_ZONE setting).",
        )
        parser.add_argument(
            "--until", type=_date, metavar="YYYY-MM-DD", help="Answers up to this day (inclusive)."
        )
        parser.add_argument(
            "--site",
            metavar="SITE_KEY",
            default="",
            help="Only conversations of this site (its widget key).",
        )
        parser.add_argument(
            "--language",
            metavar="PREFIX",
            default="",
            help="Only conversations in this language: 'zh' matches zh and zh-CN.",
        )
        parser.add_argument(
            "--thumbs",
            choices=[finetune.THUMBS_UP, finetune.THUMBS_ANY],
            default=finetune.THUMBS_UP,
            help="up: answers rated thumbs-up (default). any: every answer "
            "not rated thumbs-down; use it with --min-csat.",
        )
        parser.add_argument(
            "--min-csat",
            type=_csat,
            metavar="N",
            help="Also require the conversation's CSAT score to be at least N "
            "(1-5); conversations without a score are left out.",
        )
        parser.add_argument(
            "--validation-fraction",
            type=_fraction,
            default=finetune.DEFAULT_VALIDATION_FRACTION,
            metavar="F",
            help="Share of conversations for validation (default: %(default)s; "
            "0: no validation file).",
        )
        parser.add_argument(
            "--pairs",
            type=Path,
            metavar="PATH",
            help="Also write DPO preference pairs (agent reply chosen over a "
            "thumbs-down answer) to this file.",
        )

    def handle(self, *args, **options):
        if (
            options["site"]
            and selectors.site_by_key(site_key=options["site"], active_only=False) is None
        ):
            raise CommandError(f"No site with key {options['site']!r} (see admin, Sites).")
        if options["since"] and options["until"] and options["since"] > options["until"]:
            raise CommandError("--since is after --until.")
        selection = finetune.Selection(
            since=options["since"],
            until=options["until"],
            site_key=options["site"],
            language=options["language"],
            thumbs=options["thumbs"],
            min_csat=options["min_csat"],
        )
        fraction = options["validation_fraction"]
        out: Path = options["out"]
        valid = finetune.validation_path(out) if fraction else None
        stats = finetune.ExportStats()
        quiet = options["verbosity"] == 0

        answers = finetune.rated_answers(selection)
        with _open(out) as train_file, _open(valid) as valid_file:
            files = {"train": train_file, "validation": valid_file}
            progress = tqdm(
                answers.iterator(chunk_size=500),
                total=answers.count(),
                desc="answers",
                unit=" answers",
                disable=quiet,
            )
            for split, line in finetune.chat_lines(
                progress, stats=stats, validation_fraction=fraction
            ):
                files[split].write(line + "\n")

        if options["pairs"]:
            corrected = finetune.corrected_answers(selection)
            with _open(options["pairs"]) as pairs_file:
                progress = tqdm(
                    corrected.iterator(chunk_size=500),
                    total=corrected.count(),
                    desc="pairs",
                    unit=" pairs",
                    disable=quiet,
                )
                for line in finetune.pair_lines(progress, stats=stats):
                    pairs_file.write(line + "\n")

        for line in finetune.summary_lines(stats, train=out, valid=valid, pairs=options["pairs"]):
            self.stdout.write(line)


def _open(path: Path | None):
    if path is None:
        return contextlib.nullcontext()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"Cannot write {path}: {exc}") from exc
