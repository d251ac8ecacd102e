"""`python manage.py import_knowledge PATH…`: help-centre pages into the knowledge base.

PATH: Markdown files, CSV files of question,answer pairs, or folders of them (recursive).
Re-importing a file updates its article instead of adding a second one. `--sample` loads the
shipped sample help centre (chat/knowledge/sample/), `--remove-sample` removes it.
"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from chat import selectors
from chat.knowledge import importing, services

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "knowledge" / "sample" / "articles"


class Command(BaseCommand):
    help = "Import Markdown pages and question,answer CSV files into the knowledge base."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", metavar="PATH",
                            help="Markdown (.md) or CSV (.csv) files, or folders of them.")
        parser.add_argument("--site", metavar="SITE_KEY",
                            help="Only this site's customers see the articles (default: all).")
        parser.add_argument("--language", default="",
                            help="Language of files that name none in front matter, file name "
                            "(shipping.zh.md) or column (default: guessed from the text).")
        parser.add_argument("--sample", action="store_true",
                            help="Import the sample help centre (a fictional shop), marked as "
                            "sample data.")
        parser.add_argument("--remove-sample", action="store_true",
                            help="Delete the sample help centre's articles.")

    def handle(self, *args, **options):
        if options["remove_sample"]:
            removed = services.sample_remove()
            self.stdout.write(f"Removed {removed} sample article(s).")
            if not (options["paths"] or options["sample"]):
                return
        if not (options["paths"] or options["sample"]):
            raise CommandError("Give at least one PATH, or --sample.")
        site_id = self._site_id(options["site"])
        try:
            # (file, is it sample data?)
            files = [(f, False) for f in importing.collect([Path(p) for p in options["paths"]])]
            if options["sample"]:
                files += [(f, True) for f in importing.collect([SAMPLE_DIR])]
        except importing.SourceError as exc:
            raise CommandError(str(exc)) from exc

        sources = [(source, is_sample) for path, is_sample in files
                   for source in importing.read(path, language=options["language"])]
        counts = {"created": 0, "updated": 0, "skipped": 0, "failed": 0}
        for source, is_sample in tqdm(sources, desc="Importing", unit="article", disable=None):
            if isinstance(source, importing.SourceError):
                counts["failed"] += 1
                tqdm.write(f"Not imported: {source}", file=self.stderr, end="")
                continue
            _, outcome = services.article_import(site_id=site_id, source_key=source.source_key,
                                                 is_sample=is_sample, **source.fields)
            counts[outcome] += 1
        self.stdout.write(
            f"Knowledge import from {len(files)} file(s): {counts['created']} created, "
            f"{counts['updated']} updated, {counts['skipped']} skipped (unchanged), "
            f"{counts['failed']} failed.")

    @staticmethod
    def _site_id(site_key: str | None) -> int | None:
        if not site_key:
            return None
        site = selectors.site_by_key(site_key=site_key, active_only=False)
        if site is None:
            raise CommandError(f"No site with key {site_key!r} (see admin, Sites).")
        return site.pk
