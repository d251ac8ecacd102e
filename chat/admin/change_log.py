"""Admin's own record: who changed what in admin, and when (Django's LogEntry rows)."""

from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.http import HttpRequest
from django.utils.html import format_html

from chat.admin.view_only import ViewOnly


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
