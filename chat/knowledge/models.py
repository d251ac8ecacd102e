"""Help-centre articles and the passages they are split into for retrieval.

Imported at the end of `chat.models` so Django's app registry finds them in the `chat` app.
Writes go through `chat.knowledge.services` (they re-split passages and bump the knowledge
version every process checks), reads through `chat.knowledge.selectors`.
"""

from django.db import models


class Article(models.Model):
    """One help-centre page in one language, for one site or (site empty) for every site."""

    title = models.CharField(max_length=300)
    # The name an eval file or a link may use; from the file name on import.
    slug = models.SlugField(max_length=200, blank=True, allow_unicode=True, db_index=True)
    body = models.TextField(help_text="Markdown. ## headings split it into passages.")
    language = models.CharField(
        max_length=35,
        default="en",
        help_text="Primary language subtag (BCP 47), e.g. en or zh: questions in this language "
        "search these articles first.",
    )
    site = models.ForeignKey(
        "chat.Site",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="knowledge_articles",
        help_text="Empty: used for every site. A site's own articles are never shown to another.",
    )
    tags = models.JSONField(default=list, blank=True, help_text='e.g. ["shipping", "returns"]')
    source_url = models.URLField(
        max_length=2000, blank=True, help_text="Where customers can read the page; cited as source."
    )
    # What an import recognises the article by on re-import (front-matter id, else url, else
    # title and language; never where the file lies), so a second import updates instead of
    # duplicating, from wherever it runs. See chat/knowledge/importing.py.
    source_key = models.CharField(max_length=500, blank=True, editable=False)
    published = models.BooleanField(default=True, help_text="Only published articles answer.")
    is_sample = models.BooleanField(
        default=False,
        editable=False,
        help_text="Part of the shipped sample help centre (import_knowledge --remove-sample).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "id"]
        constraints = [
            # NULL sites are distinct in a plain unique constraint: one for each case.
            models.UniqueConstraint(
                fields=["site", "source_key"],
                condition=models.Q(site__isnull=False) & ~models.Q(source_key=""),
                name="knowledge_source_once_per_site",
            ),
            models.UniqueConstraint(
                fields=["source_key"],
                condition=models.Q(site__isnull=True) & ~models.Q(source_key=""),
                name="knowledge_source_once_for_all_sites",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} [{self.language}]"


class Passage(models.Model):
    """One section of an article (under its headings), the unit that retrieval returns."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="passages")
    # The headings above the section below the title, e.g. "Refunds > How long it takes".
    heading = models.CharField(max_length=1000, blank=True)
    text = models.TextField()
    position = models.PositiveIntegerField()

    class Meta:
        ordering = ["article", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["article", "position"], name="passage_position_once_per_article"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.article.title} > {self.heading}" if self.heading else self.article.title
