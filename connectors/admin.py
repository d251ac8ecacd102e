"""Admin for the channels: inboxes (their secrets shown masked, in lists and forms alike),
what came in through them, and their outbox (read-only, with a resend action)."""

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from chat.models import Inbox
from connectors import kinds, services
from connectors.models import Inbound, Outbound


class InboxForm(forms.ModelForm):
    """The settings are edited as JSON in which literal secrets stay masked: a masked value
    left as it is keeps the stored secret; a new value replaces it."""

    settings = forms.JSONField(
        help_text="The kind's settings (docs/channels.md). Write secrets as ${ENV_NAME}; one "
        "written literally is stored and shown masked from then on."
    )
    bot_mode = forms.ChoiceField(
        choices=[(mode.value, mode.label) for mode in services.BOT_MODES],
        initial=Inbox.BotMode.ANSWER,
    )

    class Meta:
        model = Inbox
        fields = ("site", "kind", "name", "settings", "bot_mode", "enabled")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["settings"] = kinds.masked(self.instance.kind, self.instance.settings)

    def clean(self):
        data = super().clean()
        given = data.get("settings")
        kind = data.get("kind")
        if not isinstance(given, dict) or not kind:
            return data
        if self.instance.pk:
            stored = self.instance.settings
            shown = kinds.masked(self.instance.kind, stored)
            given = {
                key: stored[key] if key in shown and value == shown[key] else value
                for key, value in given.items()
            }
        problems = kinds.problems(kind, given)
        if problems:
            self.add_error("settings", "; ".join(problems))
        data["settings"] = given
        return data


@admin.register(Inbox)
class InboxAdmin(admin.ModelAdmin):
    form = InboxForm
    list_display = ("name", "kind", "site", "shown_settings", "bot_mode", "enabled", "created")
    list_filter = ("kind", "enabled", "bot_mode", "site")
    list_select_related = ("site",)
    search_fields = ("name", "site__name")
    readonly_fields = ("created",)

    @admin.display(description="settings")
    def shown_settings(self, obj: Inbox) -> str:
        return json.dumps(kinds.masked(obj.kind, obj.settings), ensure_ascii=False)


@admin.register(Inbound)
class InboundAdmin(admin.ModelAdmin):
    """What came in: taken into a conversation, or ignored and why. Read-only."""

    list_display = ("received_at", "inbox", "sender", "subject", "outcome", "reason")
    list_filter = ("outcome", "reason", "inbox")
    search_fields = ("external_id", "sender", "subject")
    date_hierarchy = "received_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Outbound)
class OutboundAdmin(admin.ModelAdmin):
    """The outbox and its log. Rows are written by the desk's services and the connectors
    process; here they are only read, and queued again by the resend action."""

    list_display = (
        "created_at",
        "inbox",
        "conversation_id",
        "external_id",
        "status",
        "tries",
        "last_error",
        "next_try_at",
        "sent_at",
    )
    list_filter = ("status", "inbox")
    list_select_related = ("inbox",)
    search_fields = ("external_id", "conversation__id")
    actions = ["resend"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("connectors.change_outbound")

    @admin.action(description="Send the selected messages again", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Outbound]):
        count = services.outbound_resend(pks=queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            ngettext("Queued %d message again.", "Queued %d messages again.", count) % count,
            messages.SUCCESS,
        )
