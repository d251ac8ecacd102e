"""Writes to the knowledge base. Each one re-splits what it changed into passages and, once
committed, bumps the knowledge version so every process's index follows (`version`)."""

from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.text import slugify

from chat.knowledge import selectors, version
from chat.knowledge.models import Article, Passage
from chat.knowledge.segment import primary_language
from chat.knowledge.splitting import split_sections

# What an import may set; the rest (ids, timestamps, source_key) belongs to the desk.
ARTICLE_FIELDS = (
    "title",
    "slug",
    "body",
    "language",
    "site_id",
    "tags",
    "source_url",
    "published",
    "is_sample",
)


def _changed() -> None:
    transaction.on_commit(version.bump)


def _resplit(article: Article) -> None:
    article.passages.all().delete()
    sections = split_sections(article.body, max_chars=settings.KNOWLEDGE["PASSAGE_MAX_CHARS"])
    Passage.objects.bulk_create(
        [
            Passage(article=article, heading=section.heading[:1000], text=section.text, position=i)
            for i, section in enumerate(sections)
        ]
    )


def _normalise(article: Article) -> None:
    article.title = article.title.strip()[:300]
    article.language = primary_language(article.language) or "en"
    article.slug = (article.slug or slugify(article.title, allow_unicode=True))[:200]
    article.tags = [str(tag).strip() for tag in article.tags or [] if str(tag).strip()]


def article_save(*, article: Article) -> Article:
    """Save a new or changed article (admin form, import) and split it into passages again."""
    _normalise(article)
    with transaction.atomic():
        article.save()
        _resplit(article)
        _changed()
    return article


def article_create(
    *,
    title: str,
    body: str,
    language: str = "en",
    site_id: int | None = None,
    slug: str = "",
    tags: Iterable[str] = (),
    source_url: str = "",
    source_key: str = "",
    published: bool = True,
    is_sample: bool = False,
) -> Article:
    return article_save(
        article=Article(
            title=title,
            body=body,
            language=language,
            site_id=site_id,
            slug=slug,
            tags=list(tags),
            source_url=source_url,
            source_key=source_key,
            published=published,
            is_sample=is_sample,
        )
    )


def article_update(*, article: Article, **changes) -> Article:
    """Change some of ARTICLE_FIELDS of an article (passages follow)."""
    unknown = set(changes) - set(ARTICLE_FIELDS)
    if unknown:
        raise TypeError(f"not an article field: {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        setattr(article, name, value)
    return article_save(article=article)


def article_import(*, site_id: int | None, source_key: str, **fields) -> tuple[Article, str]:
    """Create or update the article a source (file, CSV row, URL) gave before: ("created" |
    "updated" | "skipped", when nothing changed: no write, no version bump)."""
    existing = selectors.article_by_source(site_id=site_id, source_key=source_key)
    if existing is None:
        return article_create(site_id=site_id, source_key=source_key, **fields), "created"
    probe = Article(**{name: getattr(existing, name) for name in ARTICLE_FIELDS})
    for name, value in fields.items():
        setattr(probe, name, list(value) if name == "tags" else value)
    _normalise(probe)
    if all(getattr(probe, name) == getattr(existing, name) for name in ARTICLE_FIELDS):
        return existing, "skipped"
    return article_update(article=existing, **{n: getattr(probe, n) for n in fields}), "updated"


def article_delete(*, article: Article) -> None:
    with transaction.atomic():
        article.delete()
        _changed()


def articles_delete(*, queryset: QuerySet[Article]) -> int:
    """Delete articles (and their passages); returns how many articles went."""
    with transaction.atomic():
        _, per_model = queryset.delete()
        _changed()
    return per_model.get(Article._meta.label, 0)


def articles_set_published(*, queryset: QuerySet[Article], published: bool) -> int:
    """Publish or withdraw articles at once (admin action); passages are unchanged."""
    with transaction.atomic():
        count = queryset.update(published=published, updated_at=timezone.now())
        _changed()
    return count


def sample_remove() -> int:
    """Delete the sample help centre; returns how many articles went."""
    return articles_delete(queryset=selectors.sample_articles())
