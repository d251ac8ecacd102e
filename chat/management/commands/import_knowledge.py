"""`python manage.py import_knowledge PATH…`: help-centre pages into the knowledge base.

PATH: Markdown files, CSV files of question,answer pairs, or folders of them (recursive).
Re-importing a file updates its article instead of adding a second one, from wherever it is
imported (see chat/knowledge/importing.py for how a page is recognised). `--sample` loads the
shipped sample help centre (chat/knowledge/sample/), `--remove-sample` removes it.

Finding no file at all is an error, not an empty success. At the end the knowledge version is
bumped once, so every running process searches the new articles from its next question; when
that fails (the desk's Redis is not the one this command reached), the command says so.
"""

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from chat import selectors
from chat.knowledge import importing, services, version

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "knowledge" / "sample" / "articles"


class Command(BaseCommand):
    help = "Import Markdown pages and question,answer CSV files into the knowledge base."

    def add_arguments(self, parser):
        parser.add_argument(
            "paths",
            nargs="*",
            metavar="PATH",
            help="Markdown (.md) or CSV (.csv) files, or folders of them.",
        )
        parser.add_argument(
            "--site",
            metavar="SITE_KEY",
            help="Only this site's customers see the articles (default: all).",
        )
        parser.add_argument(
            "--language",
            default="",
            help="Language of files that name none in front matter, file name "
            "(shipping.zh.md) or column (default: guessed from the text).",
        )
        parser.add_argument(
            "--sample",
            action="store_true",
            help="Import the sample help centre (a fictional shop), marked as sample data.",
        )
        parser.add_argument(
            "--remove-sample", action="store_true", help="Delete the sample help centre's articles."
        )

    def handle(self, *args, **options):
        if not (options["paths"] or options["sample"] or options["remove_sample"]):
            raise CommandError("Give at least one PATH, or --sample.")
        # Everything that can be refused is checked before the first write.
        site_id = self._site_id(options["site"])
        files = self._files([Path(p) for p in options["paths"]], sample=options["sample"])
        # One version bump for the whole run, at the end, even when every article was
        # unchanged: running the import again is then how to catch up a desk that missed it.
        with version.held():
            try:
                if options["remove_sample"]:
                    removed = services.sample_remove()
                    self.stdout.write(f"Removed {removed} sample article(s).")
                if files:
                    self._import(files, site_id=site_id, language=options["language"])
            finally:
                self._tell_the_desk(version.tell())

    def _files(self, paths: list[Path], *, sample: bool) -> list[tuple[Path, bool]]:
        """(file, is it sample data?) for every file to read; an error when paths or --sample
        were given and not one file was found, since an import of nothing is a mistake."""
        files: list[tuple[Path, bool]] = []
        empty: list[Path] = []
        try:
            for path in paths:
                found = importing.collect([path])
                empty += [] if found else [path]
                files += [(f, False) for f in found]
            if sample:
                files += [(f, True) for f in importing.collect([SAMPLE_DIR])]
        except importing.SourceError as exc:
            raise CommandError(str(exc)) from exc
        if (paths or sample) and not files:
            where = ", ".join(str(p) for p in paths) or str(SAMPLE_DIR)
            raise CommandError(
                f"No Markdown (.md, .markdown) or CSV (.csv) file found in {where}: nothing "
                "imported. Give the folder that holds the help-centre pages, or the files "
                "themselves (inside a folder, names starting with a dot are skipped)."
            )
        for path in empty:  # a mistyped folder among good ones
            self.stderr.write(f"No Markdown or CSV file in {path}: nothing from there.")
        # Once each, however it was named ("kb" and "kb/faq.md", relative and absolute).
        unique: dict[Path, tuple[Path, bool]] = {}
        for path, is_sample in files:
            unique.setdefault(path.resolve(), (path, is_sample))
        return list(unique.values())

    def _import(
        self, files: list[tuple[Path, bool]], *, site_id: int | None, language: str
    ) -> None:
        sources = [
            (source, is_sample)
            for path, is_sample in files
            for source in importing.read(path, language=language)
        ]
        counts = {"created": 0, "updated": 0, "skipped": 0, "failed": 0}
        first_with_key: dict[str, str] = {}  # source key → the origin that had it first
        for source, is_sample in tqdm(sources, desc="Importing", unit="article", disable=None):
            if isinstance(source, importing.SourceError):
                counts["failed"] += 1
                tqdm.write(f"Not imported: {source}", file=self.stderr, end="")
                continue
            first = first_with_key.setdefault(source.source_key, source.origin)
            if first != source.origin:
                # Imported too, the second would overwrite the first at every import.
                counts["failed"] += 1
                tqdm.write(
                    f"Not imported: {source.origin}: "
                    f"{importing.same_key_reason(source.source_key)} as {first}. "
                    "Give each an id or url (front matter, or a CSV url column), or change "
                    "one title.",
                    file=self.stderr,
                    end="",
                )
                continue
            _, outcome = services.article_import(
                site_id=site_id, source_key=source.source_key, is_sample=is_sample, **source.fields
            )
            counts[outcome] += 1
        self.stdout.write(
            f"Knowledge import from {len(files)} file(s): {counts['created']} created, "
            f"{counts['updated']} updated, {counts['skipped']} skipped (unchanged), "
            f"{counts['failed']} failed."
        )

    def _tell_the_desk(self, error: str | None) -> None:
        """Say plainly when the running desk did not hear of the change: its processes go on
        answering from their old index until it ages out or they restart."""
        if error is None:
            return
        max_age = settings.KNOWLEDGE["INDEX_MAX_AGE_SECONDS"]
        when = (
            f"within {max_age:g} s (KNOWLEDGE_INDEX_MAX_AGE_SECONDS) or when restarted"
            if max_age > 0
            else "only when restarted (KNOWLEDGE_INDEX_MAX_AGE_SECONDS=0)"
        )
        self.stderr.write(
            f"The running desk was not told of this change: Redis at "
            f"{_shown(settings.REDIS_URL)} did not answer ({error.rstrip('.')}). The change "
            f"is saved; a running desk answers from it {when}. To tell it now, set REDIS_URL "
            "to the desk's Redis (the one its processes use) and run the import again. A desk "
            "started by `make run` with the same VAR_DIR is found without it while it runs."
        )

    @staticmethod
    def _site_id(site_key: str | None) -> int | None:
        if not site_key:
            return None
        site = selectors.site_by_key(site_key=site_key, active_only=False)
        if site is None:
            raise CommandError(f"No site with key {site_key!r} (see admin, Sites).")
        return site.pk


def _shown(url: str) -> str:
    """The URL without its password, for a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
