"""Admin for the knowledge base: help-centre articles the bot answers from."""

from django.contrib import admin, messages
from django.db.models import Count, QuerySet, URLField
from django.http import HttpRequest
from django.utils.html import format_html_join
from django.utils.text import Truncator

from chat.knowledge import services as knowledge_services
from chat.knowledge.models import Article


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    """Help-centre articles the bot answers from. Every save, deletion and (un)publishing goes
    through `chat.knowledge.services`: passages are split again, and every process searches the
    new text from its next question on."""

    list_display = (
        "title",
        "language",
        "site",
        "published",
        "is_sample",
        "passage_count",
        "updated_at",
    )
    list_filter = ("published", "language", "is_sample", "site")
    search_fields = ("title", "slug", "body")
    fields = (
        "title",
        "slug",
        "language",
        "site",
        "body",
        "tags",
        "source_url",
        "published",
        "passage_list",
        "source_key",
        "is_sample",
        "created_at",
        "updated_at",
    )
    readonly_fields = ("passage_list", "source_key", "is_sample", "created_at", "updated_at")
    formfield_overrides = {URLField: {"assume_scheme": "https"}}
    actions = ["publish", "unpublish"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Article]:
        return (
            super()
            .get_queryset(request)
            .select_related("site")
            .annotate(passage_total=Count("passages"))
        )

    @admin.display(description="passages", ordering="passage_total")
    def passage_count(self, obj: Article) -> int:
        return obj.passage_total

    @admin.display(description="passages (as retrieval sees them)")
    def passage_list(self, obj: Article) -> str:
        # Read-only: passages follow the body on every save.
        if obj.pk is None:
            return "Split from the body's ## headings when saved."
        return format_html_join(
            "",
            "<p><strong>{}</strong><br>{}</p>",
            (
                (p.heading or obj.title, Truncator(p.text).chars(300))
                for p in obj.passages.order_by("position")
            ),
        )

    def save_model(self, request: HttpRequest, obj: Article, form, change: bool) -> None:
        knowledge_services.article_save(article=obj)

    def delete_model(self, request: HttpRequest, obj: Article) -> None:
        knowledge_services.article_delete(article=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        knowledge_services.articles_delete(queryset=queryset)

    @admin.action(description="Publish selected articles", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        count = self._set_published(
            request,
            queryset,
            published=True,
            record="Published (action “Publish selected articles”).",
        )
        self.message_user(request, f"{count} article(s) published.", messages.SUCCESS)

    @admin.action(description="Withdraw selected articles (unpublish)", permissions=["change"])
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        count = self._set_published(
            request,
            queryset,
            published=False,
            record="Withdrawn (action “Withdraw selected articles”).",
        )
        self.message_user(request, f"{count} article(s) withdrawn.", messages.SUCCESS)

    def _set_published(
        self, request: HttpRequest, queryset: QuerySet[Article], *, published: bool, record: str
    ) -> int:
        # Django logs its forms' saves, not actions: the admin change log gets a line here for
        # each article whose state the action actually changed.
        changing = list(queryset.exclude(published=published))
        count = knowledge_services.articles_set_published(queryset=queryset, published=published)
        for article in changing:
            self.log_change(request, article, record)
        return count
