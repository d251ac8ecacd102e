"""Transcripts in admin: conversations, their messages and the customers' ratings, read-only,
with filters for what went wrong, search in message text, and exports (JSON, CSV, fine-tuning).
"""

from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce, Substr
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from chat import customers, exports, finetune
from chat.actions.models import ActionCall
from chat.admin.downloads import download
from chat.admin.filters import (
    FallbackFilter,
    GuardFilter,
    HandoffFilter,
    RatingFilter,
    SourcesFilter,
)
from chat.admin.view_only import ViewOnly
from chat.models import Conversation, Feedback, Message

SNIPPET_LENGTH = 80
FINETUNE_BATCH = 200  # answers a database round trip fetches


class TranscriptAdmin(ViewOnly, admin.ModelAdmin):
    """View only: a transcript is the record of what was said, and a conversation changes
    through `agents.services` (takeover, hand back, close, reply, from the console), never by
    editing rows: nothing else tells the console and the customer's sockets, or clears the
    recent-turn cache. Not even deleted, which would also take the customer's ratings."""

    def conversation_id_of(self, obj) -> object:
        raise NotImplementedError

    def get_fieldsets(self, request: HttpRequest, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        console = reverse("agents:conversation", args=[self.conversation_id_of(obj)])
        note = format_html(
            "Read-only: staff take over, reply, hand back and close conversations from the "
            '<a href="{}">agent console</a>, which keeps the live views in step.',
            console,
        )
        (name, options), *rest = fieldsets
        return [(name, {**options, "description": note}), *rest]


class MessageInline(ViewOnly, admin.TabularInline):
    # Read-only, as its conversation is (see TranscriptAdmin).
    model = Message
    extra = 0
    can_delete = False
    fields = (
        "created_at",
        "role",
        "text",
        "author",
        "finish_reason",
        "guards",
        "completion_tokens",
        "ttft_ms",
        "total_ms",
        "is_fallback",
        "is_partial",
        "feedback_rating",
    )
    readonly_fields = fields
    ordering = ("id",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # One query for the whole transcript, not one per message for author and feedback.
        return super().get_queryset(request).select_related("author", "feedback")

    @admin.display(description="feedback")
    def feedback_rating(self, obj: Message) -> str:
        feedback = getattr(obj, "feedback", None)
        if feedback is None:
            return ""
        return feedback.get_rating_display() + (f": {feedback.comment}" if feedback.comment else "")


class ActionCallInline(ViewOnly, admin.TabularInline):
    """The company's back end called in the conversation (chat/actions): what, with which
    arguments, how it ended. Never headers or secrets: the calls hold none."""

    model = ActionCall
    extra = 0
    can_delete = False
    fields = (
        "created_at",
        "action_name",
        "arguments",
        "proposed_by",
        "status",
        "reason",
        "http_status",
        "latency_ms",
        "text",
        "message",
    )
    readonly_fields = fields
    ordering = ("id",)
    verbose_name_plural = "actions"


@admin.register(Conversation)
class ConversationAdmin(TranscriptAdmin):
    list_display = (
        "id",
        "site",
        "channel",
        "status",
        "language",
        "first_customer_message",
        "verified_customer",
        "message_count",
        "csat_score",
        "created_at",
    )
    list_filter = (
        "status",
        "channel",
        RatingFilter,
        FallbackFilter,
        GuardFilter,
        HandoffFilter,
        "language",
        "site",
        "created_at",
    )
    list_select_related = ("site",)
    # Django removes the duplicates a match in several messages would give (with EXISTS).
    search_fields = ("id", "messages__text", "page_url", "=customer_id")
    readonly_fields = (
        "id",
        "verified_customer",
        "channel",
        "token_hash",
        "created_at",
        "updated_at",
        "last_message_at",
        "user_agent",
        "page_url",
        "metadata",
        "handoff_requested_at",
        "csat_score",
        "csat_comment",
        "csat_at",
        "closed_at",
    )
    inlines = [MessageInline, ActionCallInline]
    date_hierarchy = "created_at"
    # Exports only: they read. Without the delete permission Django offers no "delete selected".
    actions = ["export_json", "export_csv", "export_finetune"]

    def conversation_id_of(self, obj: Conversation) -> object:
        return obj.pk

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        # Columns from the messages as subqueries: one query for the page, no N+1, and no
        # join that filters on messages could multiply.
        messages = Message.objects.filter(conversation=OuterRef("pk")).order_by()
        count = messages.values("conversation").annotate(n=Count("pk")).values("n")
        first = (
            messages.filter(role=Message.Role.CUSTOMER)
            .order_by("id")
            .values(snippet=Substr("text", 1, SNIPPET_LENGTH + 1))[:1]
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=Coalesce(Subquery(count), 0),
                first_customer_text=Subquery(first),
            )
        )

    @admin.display(description="verified customer", ordering="customer_id")
    def verified_customer(self, obj: Conversation) -> str:
        """Plain text: admin escapes it, and the id, name and e-mail come from outside."""
        customer = customers.customer_of(obj)
        if customer is None:
            return "—"
        who = " · ".join(part for part in (customer.id, customer.name, customer.email) if part)
        until = f"{customer.expires_at:%Y-%m-%d %H:%M} UTC"
        state = f"current until {until}" if customer.is_current() else f"expired {until}"
        return f"Verified customer: {who} ({state})"

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        return obj.message_count

    @admin.display(description="first customer message")
    def first_customer_message(self, obj: Conversation) -> str:
        text = obj.first_customer_text or ""
        return text[:SNIPPET_LENGTH] + "…" if len(text) > SNIPPET_LENGTH else text

    @admin.action(description="Export selected transcripts as JSON", permissions=["view"])
    def export_json(self, request: HttpRequest, queryset: QuerySet[Conversation]):
        return download(
            exports.transcripts_json(queryset),
            "transcripts",
            "json",
            "application/json; charset=utf-8",
        )

    @admin.action(description="Export selected transcripts as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Conversation]):
        return download(
            exports.transcripts_csv(queryset), "transcripts", "csv", "text/csv; charset=utf-8"
        )

    @admin.action(
        description="Export selected for fine-tuning (ZIP: train, validation, pairs)",
        permissions=["view"],
    )
    def export_finetune(self, request: HttpRequest, queryset: QuerySet[Conversation]):
        """The selected conversations' answers as `manage.py export_finetune --pairs` writes
        them (its rules, scrubbing and split), in one ZIP archive."""
        parts = finetune.archive(finetune.Selection(conversations=queryset), batch=FINETUNE_BATCH)
        return download(parts, "finetune", "zip", "application/zip")


@admin.register(Message)
class MessageAdmin(TranscriptAdmin):
    list_display = (
        "id",
        "conversation",
        "role",
        "short_text",
        "finish_reason",
        "guards",
        "is_fallback",
        "is_partial",
        "source_titles",
        "created_at",
    )
    list_filter = ("role", SourcesFilter, GuardFilter, "is_fallback", "is_partial", "finish_reason")
    search_fields = ("text",)
    raw_id_fields = ("conversation",)
    readonly_fields = (
        "conversation",
        "role",
        "client_id",
        "created_at",
        "updated_at",
        "model_name",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "total_ms",
        "finish_reason",
        "guards",
        "is_fallback",
        "is_partial",
        "sources",
    )

    def conversation_id_of(self, obj: Message) -> object:
        return obj.conversation_id

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]

    @admin.display(description="sources")
    def source_titles(self, obj: Message) -> str:
        """The help-centre articles a bot answer was grounded in."""
        return ", ".join(source["title"] for source in obj.sources) or "—"


@admin.register(Feedback)
class FeedbackAdmin(TranscriptAdmin):
    """The customers' own ratings: read-only like the answers they rate (and they feed the
    fine-tuning export, which must get what customers said)."""

    list_display = ("message", "rating", "short_comment", "conversation_link", "created_at")
    list_select_related = ("message",)
    list_filter = ("rating", "created_at")
    search_fields = ("comment", "message__text")
    raw_id_fields = ("message",)

    def conversation_id_of(self, obj: Feedback) -> object:
        return obj.message.conversation_id

    @admin.display(description="comment")
    def short_comment(self, obj: Feedback) -> str:
        return obj.comment[:80]

    @admin.display(description="conversation")
    def conversation_link(self, obj: Feedback) -> str:
        conversation_id = obj.message.conversation_id
        url = reverse("admin:chat_conversation_change", args=[conversation_id])
        return format_html('<a href="{}">{}</a>', url, str(conversation_id)[:8])
