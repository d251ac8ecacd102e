"""Files into article fields: Markdown pages and CSV files of question,answer pairs.

Markdown: optional front matter between `---` lines (`title`, `language`/`lang`, `slug`, `url`,
`id`, `tags`, `published`); the first `# ` line is the title (front matter wins) and leaves the
body. CSV: a `question,answer` header (optional columns: language, tags, url) or two plain
columns; each row becomes a short article titled by its question.

Each source has a key a re-import recognises it by: front-matter `id`, else its `url`, else the
file's absolute path (with the question, for a CSV row). Parsing only: the writes are
`services.article_import`.
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
_COLUMN_ALIASES = {"问题": "question", "答案": "answer", "回答": "answer", "语言": "language",
                   "标签": "tags", "链接": "url"}
MAX_KEY_CHARS = 500  # Article.source_key


class SourceError(ValueError):
    """A file or row that cannot become an article; the import goes on with the others."""


@dataclass
class ArticleSource:
    source_key: str
    origin: str  # for messages: the file, and the row of a CSV
    fields: dict = field(default_factory=dict)  # keyword arguments of services.article_import


def collect(paths: list[Path]) -> list[Path]:
    """The Markdown and CSV files among `paths`, folders searched recursively, in order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()
                                and p.suffix.lower() in MARKDOWN_SUFFIXES | CSV_SUFFIXES
                                and not any(part.startswith(".") for part in p.parts)))
        elif path.is_file():
            found.append(path)
        else:
            raise SourceError(f"{path}: no such file or folder")
    return list(dict.fromkeys(found))


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
    return meta, text[match.end():]


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
    key = f"id:{meta['id']}" if meta.get("id") else url or f"file:{path.resolve()}"
    return ArticleSource(_fit(key), str(path), {
        "title": title,
        "body": body,
        "language": (meta.get("language") or meta.get("lang") or name_language or language
                     or guess_language(title + "\n" + body)),
        "slug": meta.get("slug") or slugify(stem, allow_unicode=True),
        "tags": parse_tags(meta.get("tags", "")),
        "source_url": url,
        "published": meta.get("published", "true").lower() in _TRUE,
    })


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
        row = {name: (cells[i].strip() if i < len(cells) else "")
               for i, name in enumerate(columns)}
        origin = f"{path}:{number}"
        question, answer = row.get("question", ""), row.get("answer", "")
        if not any(cells):
            continue
        if not question or not answer:
            yield SourceError(f"{origin}: a row needs a question and an answer")
            continue
        digest = hashlib.sha256(" ".join(question.split()).encode()).hexdigest()[:16]
        url = row.get("url", "")
        yield ArticleSource(_fit(url or f"file:{path.resolve()}#{digest}"), origin, {
            "title": question,
            "body": answer,
            "language": (row.get("language") or name_language or language
                         or guess_language(question + "\n" + answer)),
            "slug": slugify(question, allow_unicode=True)[:200],
            "tags": parse_tags(row.get("tags", "")),
            "source_url": url,
            "published": True,
        })


def _fit(key: str) -> str:
    """A key as stored: one too long for the column becomes its hash (still one per source)."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
