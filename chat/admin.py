from django.contrib import admin

from chat.models import BotProfile, Conversation, FallbackRule, Feedback, Message, Site


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    can_delete = False
    fields = ("created_at", "role", "text", "finish_reason", "completion_tokens", "ttft_ms",
              "total_ms", "is_fallback", "is_partial")
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "site", "status", "language", "region", "csat_score", "created_at",
                    "last_message_at")
    list_filter = ("status", "site", "language", "csat_score", "created_at")
    search_fields = ("id", "messages__text", "page_url")
    readonly_fields = ("id", "token_hash", "created_at", "updated_at", "last_message_at",
                       "user_agent", "page_url", "metadata", "handoff_requested_at", "csat_score",
                       "csat_comment", "csat_at", "closed_at")
    inlines = [MessageInline]
    date_hierarchy = "created_at"


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "short_text", "finish_reason", "is_fallback",
                    "is_partial", "created_at")
    list_filter = ("role", "is_fallback", "is_partial", "finish_reason")
    search_fields = ("text",)
    raw_id_fields = ("conversation",)
    readonly_fields = ("conversation", "role", "client_id", "created_at", "updated_at",
                       "model_name", "prompt_tokens", "completion_tokens", "ttft_ms", "total_ms",
                       "finish_reason", "is_fallback", "is_partial")

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]


@admin.register(BotProfile)
class BotProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "is_default", "site_name", "temperature", "top_p", "max_tokens",
                    "updated_at")


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
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ("message", "rating", "short_comment", "created_at")
    list_filter = ("rating", "created_at")
    search_fields = ("comment", "message__text")
    raw_id_fields = ("message",)

    @admin.display(description="comment")
    def short_comment(self, obj: Feedback) -> str:
        return obj.comment[:80]
