"""Admin for the desk's data, including transcript review: filters for what went wrong
(thumbs down, fallback answers, handoffs), search in message text, and exports.

Transcripts (conversations, messages, customers' ratings) are read-only here: staff act on a
conversation from the agent console, whose services send the events live views wait for and
clear the recent-turn cache, which an admin form would not. What admin does change is on
record: Django's LogEntry rows, listed by `LogEntryAdmin` below."""

from collections.abc import AsyncIterator, Generator

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, Substr
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import content_disposition_header
from django.utils.translation import ngettext

import chat.knowledge.admin  # noqa: F401  (registers the knowledge base's admin)
from chat import exports, finetune, guards
from chat.api import keys as api_keys
from chat.models import (
    ApiKey,
    ApiScope,
    ApiSession,
    BotProfile,
    Conversation,
    FallbackRule,
    Feedback,
    Message,
    Site,
)

SNIPPET_LENGTH = 80


class ViewOnly:
    """Admin pages (and inlines) that show rows and change none: no add, change or delete."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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


class RatingFilter(admin.SimpleListFilter):
    """Thumbs up/down on any answer of the conversation, or the end-of-chat CSAT score."""

    title = "rating"
    parameter_name = "rating"
    _CSAT = {f"csat{score}": score for score in range(1, 6)}

    def lookups(self, request, model_admin):
        return [
            (Feedback.Rating.DOWN, "Has thumbs down"),
            (Feedback.Rating.UP, "Has thumbs up"),
            *((value, f"CSAT {score}") for value, score in self._CSAT.items()),
            ("csat-none", "No CSAT"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value in Feedback.Rating.values:
            # EXISTS rather than a join on messages__feedback__rating: a conversation with
            # two thumbs down is still listed once.
            rated = Feedback.objects.filter(message__conversation=OuterRef("pk"), rating=value)
            return queryset.filter(Exists(rated))
        if value in self._CSAT:
            return queryset.filter(csat_score=self._CSAT[value])
        if value == "csat-none":
            return queryset.filter(csat_score__isnull=True)
        return None


class YesNoFilter(admin.SimpleListFilter):
    """A yes/no filter over `condition`, a Q object on the conversation."""

    def condition(self) -> Q:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(self.condition())
        if self.value() == "no":
            return queryset.exclude(self.condition())
        return None


class FallbackFilter(YesNoFilter):
    title = "fallback used"
    parameter_name = "fallback"

    def condition(self) -> Q:
        return Q(Exists(Message.objects.filter(conversation=OuterRef("pk"), is_fallback=True)))


class GuardFilter(admin.SimpleListFilter):
    """Answers (or conversations with an answer) that one of the product's guards shaped:
    where the model broke a rule, or the help centre had nothing (chat/guards.py)."""

    title = "guard"
    parameter_name = "guard"

    def lookups(self, request, model_admin):
        return [(name, name.replace("_", " ")) for name in guards.ALL]

    def queryset(self, request, queryset):
        name = self.value()
        if name not in guards.ALL:
            return None
        # Names are comma-separated and none is part of another: a substring match is exact.
        if queryset.model is Message:
            return queryset.filter(guards__contains=name)
        return queryset.filter(
            Exists(Message.objects.filter(conversation=OuterRef("pk"), guards__contains=name))
        )


class HandoffFilter(YesNoFilter):
    title = "handed off"
    parameter_name = "handoff"

    def condition(self) -> Q:
        # A conversation handed back to the bot keeps handoff_requested_at; one an agent
        # took over directly may not have it, but its status tells.
        return Q(handoff_requested_at__isnull=False) | Q(
            status__in=[Conversation.Status.WAITING, Conversation.Status.HUMAN]
        )


# Characters (or bytes) of an export pulled per trip to the ORM's thread: the memory a
# download holds at once, whatever its size, and few enough trips that they cost nothing beside
# the queries.
EXPORT_BATCH_CHARS = 64 * 1024


def _download(
    parts: Generator[str, None, None] | Generator[bytes, None, None],
    name: str,
    extension: str,
    content_type: str,
) -> StreamingHttpResponse:
    """A file download streamed from `parts` (a generator of text or of bytes that may run
    queries)."""
    filename = f"{name}-{timezone.localtime():%Y%m%d-%H%M%S}.{extension}"
    response = StreamingHttpResponse(_streamed(parts), content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


async def _streamed(
    parts: Generator[str, None, None] | Generator[bytes, None, None],
) -> AsyncIterator[bytes]:
    """Batches of `parts`, each pulled in the ORM's thread: Daphne serves an async iterator as
    it comes, where it would read a sync one to the end into memory first."""

    def next_batch() -> bytes:
        batch, size = [], 0
        for part in parts:
            batch.append(part if isinstance(part, bytes) else part.encode())
            size += len(part)
            if size >= EXPORT_BATCH_CHARS:
                break
        return b"".join(batch)

    try:
        while batch := await sync_to_async(next_batch)():
            yield batch
    finally:
        # Also when the download is cut short: the queries' cursor is closed by the thread
        # that opened it (SQLite refuses any other). Not `runtime.aio.db`, whose pool may run
        # each batch on another thread (and connection) than the cursor's.
        await sync_to_async(parts.close)()


@admin.register(Conversation)
class ConversationAdmin(TranscriptAdmin):
    list_display = (
        "id",
        "site",
        "channel",
        "status",
        "language",
        "first_customer_message",
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
    search_fields = ("id", "messages__text", "page_url")
    readonly_fields = (
        "id",
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
    inlines = [MessageInline]
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

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        return obj.message_count

    @admin.display(description="first customer message")
    def first_customer_message(self, obj: Conversation) -> str:
        text = obj.first_customer_text or ""
        return text[:SNIPPET_LENGTH] + "…" if len(text) > SNIPPET_LENGTH else text

    @admin.action(description="Export selected transcripts as JSON", permissions=["view"])
    def export_json(self, request: HttpRequest, queryset: QuerySet[Conversation]):
        return _download(
            exports.transcripts_json(queryset),
            "transcripts",
            "json",
            "application/json; charset=utf-8",
        )

    @admin.action(description="Export selected transcripts as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Conversation]):
        return _download(
            exports.transcripts_csv(queryset), "transcripts", "csv", "text/csv; charset=utf-8"
        )


class SourcesFilter(admin.SimpleListFilter):
    """Bot answers with or without help-centre sources: those without are where the knowledge
    base has a gap (or the model answered from general knowledge)."""

    title = "help-centre sources"
    parameter_name = "sources"

    def lookups(self, request, model_admin):
        return [("yes", "Answers with sources"), ("no", "Answers without sources")]

    def queryset(self, request, queryset):
        answers = queryset.filter(role=Message.Role.BOT, is_fallback=False)
        if self.value() == "yes":
            return answers.exclude(sources=[])
        if self.value() == "no":
            return answers.filter(sources=[])
        return queryset


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


@admin.register(BotProfile)
class BotProfileAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "is_default",
        "site_name",
        "temperature",
        "top_p",
        "max_tokens",
        "answer_max_words",
        "answer_max_han",
        "when_no_knowledge",
        "updated_at",
    )


@admin.register(FallbackRule)
class FallbackRuleAdmin(admin.ModelAdmin):
    list_display = ("name", "keywords", "language", "priority", "enabled")
    list_editable = ("priority", "enabled")
    list_filter = ("enabled", "language")


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", "key", "language", "is_active", "created_at")
    list_filter = ("is_active", "language")
    search_fields = ("name", "key", "allowed_origins")
    readonly_fields = ("created_at",)


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


# --- API keys -------------------------------------------------------------------------------


class ApiKeyForm(forms.ModelForm):
    """What a key may do; the secret is never a field: it is made by `create_api_key` and
    shown once, after the key is added."""

    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = ("name", "site", "scopes", "requests_per_minute", "tokens_per_day")

    def clean_scopes(self) -> list[str]:
        try:
            return api_keys.clean_scopes(self.cleaned_data["scopes"])
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "site",
        "scope_list",
        "limits",
        "created_at",
        "last_used_at",
        "revoked",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "site")
    list_select_related = ("site",)
    search_fields = ("name", "prefix", "site__name", "site__key")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        fields = ("name", "site", "scopes", "requests_per_minute", "tokens_per_day")
        return fields if obj is None else (*fields, *self.readonly_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        return () if obj is None else self.readonly_fields

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        # The model's field defaults are fixed in its migration; the desk's are in settings.
        return {
            "scopes": [ApiScope.CHAT, ApiScope.OPENAI],
            "requests_per_minute": settings.API["DEFAULT_REQUESTS_PER_MINUTE"],
            "tokens_per_day": settings.API["DEFAULT_TOKENS_PER_DAY"],
            **super().get_changeform_initial_data(request),
        }

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ApiKeyForm, change: bool):
        data = form.cleaned_data
        fields = {
            name: data[name]
            for name in ("name", "site", "scopes", "requests_per_minute", "tokens_per_day")
        }
        if change:
            api_keys.update_api_key(key=obj, **fields)
            return
        key, secret = api_keys.create_api_key(**fields)
        # The admin goes on with `obj` (log entry, redirect): make it the key just created.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding = False
        obj._state.db = key._state.db
        self.message_user(
            request,
            f"The secret of API key “{key.name}” is {secret} — copy it now, it is not shown "
            "again. Send it as 'Authorization: Bearer <key>'.",
            messages.WARNING,
        )

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="limits")
    def limits(self, obj: ApiKey) -> str:
        rpm = f"{obj.requests_per_minute}/min" if obj.requests_per_minute else "no limit/min"
        tokens = f"{obj.tokens_per_day:,} tokens/day" if obj.tokens_per_day else "no token limit"
        return f"{rpm}, {tokens}"

    @admin.display(description="revoked", boolean=True, ordering="revoked_at")
    def revoked(self, obj: ApiKey) -> bool:
        return obj.revoked_at is not None

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]):
        revoked = [key for key in queryset if api_keys.revoke_api_key(key)]
        # Django logs its forms' saves, not actions: the record of who revoked a key is here.
        for key in revoked:
            self.log_change(request, key, "Revoked (action “Revoke selected keys”).")
        self.message_user(
            request,
            ngettext("Revoked %d API key.", "Revoked %d API keys.", len(revoked)) % len(revoked),
            messages.SUCCESS,
        )


@admin.register(ApiSession)
class ApiSessionAdmin(admin.ModelAdmin):
    """Read-only: sessions are made by API calls, and a caller's session id is theirs."""

    list_display = ("session_id", "api_key", "conversation", "created_at")
    list_select_related = ("api_key",)
    list_filter = ("api_key",)
    search_fields = ("session_id", "api_key__name", "api_key__prefix")
    raw_id_fields = ("api_key", "conversation")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# --- Admin change log -----------------------------------------------------------------------


@admin.register(LogEntry)
class LogEntryAdmin(ViewOnly, admin.ModelAdmin):
    """Who changed what in admin, and when: Django writes a row for every add, change and
    delete made through its forms, and the admin actions that write add theirs. A record, so
    nobody adds, edits or removes one here."""

    list_display = (
        "action_time",
        "user",
        "content_type",
        "object_link",
        "action",
        "change_summary",
    )
    list_display_links = ("action_time",)
    list_filter = (
        ("user", admin.RelatedOnlyFieldListFilter),
        ("content_type", admin.RelatedOnlyFieldListFilter),
        "action_flag",
        "action_time",
    )
    list_select_related = ("user", "content_type")
    search_fields = ("object_repr", "object_id", "change_message", "user__username")
    date_hierarchy = "action_time"
    fields = (
        "action_time",
        "user",
        "content_type",
        "object_id",
        "object_link",
        "action",
        "change_summary",
    )

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        return super().changelist_view(
            request, {"title": "Admin change log", **(extra_context or {})}
        )

    @admin.display(description="object", ordering="object_repr")
    def object_link(self, obj: LogEntry) -> str:
        # A deleted object has no page left to link to; its name is what remains.
        url = None if obj.is_deletion() else obj.get_admin_url()
        if not url:
            return obj.object_repr
        return format_html('<a href="{}">{}</a>', url, obj.object_repr)

    @admin.display(description="action", ordering="action_flag")
    def action(self, obj: LogEntry) -> str:
        return obj.get_action_flag_display()

    @admin.display(description="change")
    def change_summary(self, obj: LogEntry) -> str:
        # Stored as JSON for the form saves; this is the sentence Django makes of it.
        return obj.get_change_message()


# --- Fine-tuning export ---------------------------------------------------------------------

FINETUNE_BATCH = 200  # answers a database round trip fetches


@admin.action(
    description="Export selected for fine-tuning (ZIP: train, validation, pairs)",
    permissions=["view"],
)
def export_finetune(modeladmin, request: HttpRequest, queryset: QuerySet[Conversation]):
    """The selected conversations' answers as `manage.py export_finetune --pairs` writes them
    (its rules, scrubbing and split), in one ZIP archive."""
    parts = finetune.archive(finetune.Selection(conversations=queryset), batch=FINETUNE_BATCH)
    return _download(parts, "finetune", "zip", "application/zip")


# Named in ConversationAdmin.actions; defined here, with the export, after the class.
ConversationAdmin.export_finetune = export_finetune
