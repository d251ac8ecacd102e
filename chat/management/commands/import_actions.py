"""`python manage.py import_actions FILE…`: actions the bot may take, from YAML or JSON files.

A file holds a list of actions, or `{"actions": [...]}` (fields: docs/actions.md). Importing
again updates each action by its name and site. Every action of every file is checked before
the first write: one problem anywhere, and nothing is imported; each problem names the file,
the action and the field. `--sample` imports the shipped sample actions
(chat/actions/sample/actions.yaml, which call the sample shop on this desk), marked as sample
data; `--remove-sample` deletes the sample actions and nothing else.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from chat import selectors
from chat.actions import importing, services

SAMPLE_FILE = Path(__file__).resolve().parents[2] / "actions" / "sample" / "actions.yaml"


class Command(BaseCommand):
    help = "Import actions (calls to the company's back end) from YAML or JSON files."

    def add_arguments(self, parser):
        parser.add_argument(
            "files", nargs="*", metavar="FILE", help="YAML (.yaml, .yml) or JSON (.json) files."
        )
        parser.add_argument(
            "--site",
            metavar="SITE_KEY",
            help="For actions that name no site: only this site's conversations use them "
            "(default: all sites).",
        )
        parser.add_argument(
            "--sample",
            action="store_true",
            help="Import the sample actions (the sample shop's orders), marked as sample data.",
        )
        parser.add_argument(
            "--remove-sample", action="store_true", help="Delete the sample actions."
        )

    def handle(self, *args, **options):
        if not (options["files"] or options["sample"] or options["remove_sample"]):
            raise CommandError("Give at least one FILE, or --sample, or --remove-sample.")
        site_id = self._site_id(options["site"])
        files = [(Path(f), False) for f in options["files"]]
        if options["sample"]:
            files.append((SAMPLE_FILE, True))
        # Every file is read and checked before the first write, and the writes (the sample
        # removed, every action saved) are one transaction: all of them, or none.
        definitions, problems = [], []
        for path, is_sample in files:
            try:
                definitions += importing.read(
                    path,
                    site_id=site_id,
                    site_id_for=self._site_id_or_none,
                    is_sample=is_sample,
                )
            except importing.FileError as exc:
                problems += exc.problems
        if problems:
            self._refuse(problems)
        with transaction.atomic():
            removed = services.sample_remove() if options["remove_sample"] else None
            try:
                done = services.actions_import(definitions=definitions)
            except services.InvalidActions as exc:
                self._refuse(exc.problems)  # raises: the transaction rolls back
        if removed is not None:
            self.stdout.write(f"Removed {removed} sample action(s).")
        for path, _ in files:
            self._report(path, [(d, outcome) for d, outcome in done if d.source == str(path)])

    def _report(self, path: Path, done: list) -> None:
        counts = dict.fromkeys(
            (services.CREATED, services.UPDATED, services.UNCHANGED, services.KEPT), 0
        )
        for definition, outcome in done:
            counts[outcome] += 1
            name = definition.fields.get("name")
            if outcome == services.KEPT:
                self.stdout.write(f"  kept {name}: an action of your own has this name")
            elif outcome != services.UNCHANGED:
                self.stdout.write(f"  {outcome} {name}")
        self.stdout.write(
            f"Actions from {path}: {counts['created']} created, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged"
            + (f", {counts['kept']} kept (yours)" if counts["kept"] else "")
            + "."
        )

    def _refuse(self, problems: list[str]) -> None:
        listed = "\n".join(f"  {problem}" for problem in problems)
        raise CommandError(f"Nothing imported; {len(problems)} problem(s):\n{listed}")

    @staticmethod
    def _site_id_or_none(site_key: str) -> int | None:
        site = selectors.site_by_key(site_key=site_key, active_only=False)
        return site.pk if site else None

    def _site_id(self, site_key: str | None) -> int | None:
        if not site_key:
            return None
        site_id = self._site_id_or_none(site_key)
        if site_id is None:
            raise CommandError(f"No site with key {site_key!r} (see admin, Sites).")
        return site_id
