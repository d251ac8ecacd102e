"""Reads of the knowledge base."""

from dataclasses import dataclass

from django.db.models import Count, QuerySet

from chat.knowledge.models import Article, Passage
from chat.models import Site


@dataclass(frozen=True, slots=True)
class PassageRow:
    """What the index keeps of a passage: enough to score, filter and cite it."""

    passage_id: int
    article_id: int
    title: str
    slug: str
    source_url: str
    heading: str
    text: str
    site_id: int | None
    language: str


def passages_for_index() -> list[PassageRow]:
    """Every passage of every published article, of all sites (the index filters per
    question: one index per process serves every site)."""
    rows = (
        Passage.objects.filter(article__published=True)
        .order_by("article_id", "position")
        .values_list(
            "id",
            "article_id",
            "article__title",
            "article__slug",
            "article__source_url",
            "heading",
            "text",
            "article__site_id",
            "article__language",
        )
    )
    return [PassageRow(*row) for row in rows.iterator(chunk_size=2000)]


def article_by_source(*, site_id: int | None, source_key: str) -> Article | None:
    return Article.objects.filter(site_id=site_id, source_key=source_key).first()


def sample_articles() -> QuerySet[Article]:
    return Article.objects.filter(is_sample=True)


def published_count() -> int:
    return Article.objects.filter(published=True).count()


def articles_for_console(*, query: str = "", limit: int = 500) -> list[Article]:
    """Articles for the console's list, by title, each with `passage_total`; `query` filters
    on the title (case-insensitive)."""
    rows = Article.objects.select_related("site").annotate(passage_total=Count("passages"))
    if query.strip():
        rows = rows.filter(title__icontains=query.strip())
    return list(rows.order_by("title", "id")[:limit])


def article(*, article_id: int) -> Article | None:
    return Article.objects.select_related("site").filter(pk=article_id).first()


def sites() -> QuerySet[Site]:
    """The sites an article may belong to."""
    return Site.objects.order_by("name", "id")


def article_passages(*, article_id: int) -> list[Passage]:
    return list(Passage.objects.filter(article_id=article_id).order_by("position"))
