"""The desk's configuration: the sites that embed the widget, the bot's profiles and the
fallback rules that answer when the model cannot."""

from django.contrib import admin

from chat.models import BotProfile, FallbackRule, Site


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
