"""Files into article fields: Markdown pages and CSV files of question,answer pairs.

Markdown: optional front matter between `---` lines (`title`, `language`/`lang`, `slug`, `url`,
`id`, `tags`, `published`); the first `# ` line is the title (front matter wins) and leaves the
body. CSV: a `question,answer` header (optional columns: language, tags, url) or two plain
columns; each row becomes a short article titled by its question.

Each source has a key a re-import recognises it by, within its site: front-matter `id`, else
its `url` (a CSV row's `url` column), else its title and language (a CSV row's title is its
question). None of them is where the file lies, so the same page imported from another folder,
a moved export or a colleague's checkout updates its article instead of adding a second one.
The title rather than the file name: a help centre names its pages by title, while file names
repeat (`index.md` in every folder of a site generator's export); a title edited without an
`id` or `url` becomes a new article, and the old one stays until deleted. Two sources with the
same key in one import are one article twice: the second is refused, with what to add.
Articles imported before keys stopped being paths were re-keyed by migration 0009.
Parsing only: the writes are `services.article_import`.
"""

import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.utils.text import slugify

from chat.knowledge.segment import guess_language, primary_language
from chat.knowledge.splitting import split_title

MARKDOWN_SUFFIXES = {".md", ".markdown"}
CSV_SUFFIXES = {".csv"}
# "shipping.zh.md", "faq.zh-CN.csv": the language before the extension.
_NAME_LANGUAGE = re.compile(r"^(?P<stem>.+)\.(?P<lang>[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*)$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.S)
_TRUE = {"true", "yes", "1", "on"}
# CSV header names, in English or Chinese.
_COLUMN_ALIASES = {
    "问题": "question",
    "答案": "answer",
    "回答": "answer",
    "语言": "language",
    "标签": "tags",
    "链接": "url",
}
MAX_KEY_CHARS = 500  # Article.source_key


class SourceError(ValueError):
    """A file or row that cannot become an article; the import goes on with the others."""


@dataclass
class ArticleSource:
    source_key: str
    origin: str  # for messages: the file, and the row of a CSV
    fields: dict = field(default_factory=dict)  # keyword arguments of services.article_import


def collect(paths: list[Path]) -> list[Path]:
    """The Markdown and CSV files among `paths`, folders searched recursively, in order.
    Inside a folder, files and folders whose names start with a dot (.git, .obsidian) are
    skipped; the folders above it are the user's business (a checkout under ~/.local)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in MARKDOWN_SUFFIXES | CSV_SUFFIXES
                    and not _hidden(p.relative_to(path))
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise SourceError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def read(path: Path, *, language: str = "") -> Iterator[ArticleSource | SourceError]:
    """The articles in one file (a Markdown page: one; a CSV: one per row), or the errors."""
    suffix = path.suffix.lower()
    try:
        if suffix in MARKDOWN_SUFFIXES:
            yield read_markdown(path, language=language)
        elif suffix in CSV_SUFFIXES:
            yield from read_csv(path, language=language)
        else:
            yield SourceError(f"{path}: not Markdown (.md) or CSV (.csv)")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        yield SourceError(f"{path}: {exc}")
    except SourceError as exc:
        yield exc


def name_and_language(path: Path) -> tuple[str, str]:
    """("shipping", "zh") for shipping.zh.md; (stem, "") without a language in the name."""
    match = _NAME_LANGUAGE.match(path.stem)
    if match:
        return match["stem"], primary_language(match["lang"])
    return path.stem, ""


def parse_front_matter(text: str) -> tuple[dict[str, str], str]:
    """Simple `key: value` lines (no nesting) between `---` lines at the top, and the rest."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    meta = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith("#"):
            meta[key.strip().lower()] = value.strip().strip("\"'")
    return meta, text[match.end() :]


def parse_tags(value: str) -> list[str]:
    return [tag.strip().strip("\"'") for tag in value.strip("[]").split(",") if tag.strip()]


def read_markdown(path: Path, *, language: str = "") -> ArticleSource:
    meta, text = parse_front_matter(path.read_text(encoding="utf-8-sig"))
    heading_title, body = split_title(text)
    stem, name_language = name_and_language(path)
    title = meta.get("title") or heading_title or stem.replace("_", " ").replace("-", " ")
    if not body.strip():
        raise SourceError(f"{path}: no text below the title")
    url = meta.get("url", "")
    article_language = (
        meta.get("language")
        or meta.get("lang")
        or name_language
        or language
        or guess_language(title + "\n" + body)
    )
    key = f"id:{meta['id']}" if meta.get("id") else url or title_key(title, article_language)
    return ArticleSource(
        _fit(key),
        str(path),
        {
            "title": title,
            "body": body,
            "language": article_language,
            "slug": meta.get("slug") or slugify(stem, allow_unicode=True),
            "tags": parse_tags(meta.get("tags", "")),
            "source_url": url,
            "published": meta.get("published", "true").lower() in _TRUE,
        },
    )


def read_csv(path: Path, *, language: str = "") -> Iterator[ArticleSource | SourceError]:
    """One article per row. A row without a question or an answer is an error of its own."""
    _, name_language = name_and_language(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header = [_COLUMN_ALIASES.get(c.strip(), c.strip().lower()) for c in rows[0]]
    if "question" in header and "answer" in header:
        columns, start = header, 1
    else:
        columns, start = ["question", "answer"], 0
    for number, cells in enumerate(rows[start:], start=start + 1):
        row = {name: (cells[i].strip() if i < len(cells) else "") for i, name in enumerate(columns)}
        origin = f"{path}:{number}"
        question, answer = row.get("question", ""), row.get("answer", "")
        if not any(cells):
            continue
        if not question or not answer:
            yield SourceError(f"{origin}: a row needs a question and an answer")
            continue
        url = row.get("url", "")
        row_language = (
            row.get("language")
            or name_language
            or language
            or guess_language(question + "\n" + answer)
        )
        yield ArticleSource(
            _fit(url or title_key(question, row_language)),
            origin,
            {
                "title": question,
                "body": answer,
                "language": row_language,
                "slug": slugify(question, allow_unicode=True)[:200],
                "tags": parse_tags(row.get("tags", "")),
                "source_url": url,
                "published": True,
            },
        )


def title_key(title: str, language: str) -> str:
    """The key of a source with neither `id` nor `url`: "title:en:shipping and delivery". The
    title as the article stores it (see `services`), compared without case or spacing, and
    the primary language as stored ("en-GB" is "en"), so what the desk saved is what matches."""
    stored = title.strip()[:300]
    return f"title:{primary_language(language) or 'en'}:{' '.join(stored.split()).casefold()}"


def same_key_reason(key: str) -> str:
    """What two sources with this key have in common, for a message."""
    for prefix, reason in (
        ("id:", "the same id"),
        ("title:", "the same title and language"),
        ("sha256:", "the same id, url or title"),
    ):
        if key.startswith(prefix):
            return reason
    return "the same url"


def _fit(key: str) -> str:
    """A key as stored: one too long for the column becomes its hash (still one per source)."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
