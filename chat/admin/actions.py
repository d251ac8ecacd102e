"""Actions in admin: what the bot may call on the company's back end (edited here, or imported
with `import_actions`), and the record of every call (read-only, like the transcripts it
belongs to)."""

import json

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from chat.actions import services as action_services
from chat.actions import url_template
from chat.actions.models import Action, ActionCall
from chat.admin.view_only import ViewOnly


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, and a mistake named with its place, not just "Enter a valid JSON"."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)

    def to_python(self, value):
        if isinstance(value, str) and value.strip():
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValidationError(
                    f"Not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
                    code="invalid",
                ) from exc
        return super().to_python(value)


class TemplateField(forms.CharField):
    """A template as plain text, or one per language as a JSON object
    (`{"en": "...", "zh": "..."}`): text that reads as a JSON object is the mapping, anything
    else the one template ("{order_id} is on its way" stays text)."""

    def __init__(self, *, encoder=None, decoder=None, **kwargs):
        # A JSONField's form field is given these; plain text needs neither.
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, dict):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        if text.lstrip().startswith("{") and text.rstrip().endswith("}"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                return text
            if isinstance(parsed, dict):
                return parsed
        return text

    def has_changed(self, initial, data) -> bool:
        return self.to_python(data) != (initial if initial is not None else "")


class ActionForm(forms.ModelForm):
    class Meta:
        model = Action
        fields = (
            "name",
            "site",
            "description",
            "enabled",
            "method",
            "url",
            "headers",
            "timeout_seconds",
            "parameters",
            "audience",
            "confirm",
            "confirm_text",
            "result",
            "triggers",
        )
        field_classes = {
            "parameters": PrettyJSONField,
            "headers": PrettyJSONField,
            "triggers": PrettyJSONField,
            "confirm_text": TemplateField,
            "result": TemplateField,
        }
        widgets = {
            "parameters": forms.Textarea(
                attrs={"rows": 14, "cols": 90, "class": "vLargeTextField"}
            ),
            "headers": forms.Textarea(attrs={"rows": 4, "cols": 90}),
            "triggers": forms.Textarea(attrs={"rows": 4, "cols": 90}),
            "url": forms.TextInput(attrs={"size": 100}),
            "confirm_text": forms.Textarea(attrs={"rows": 2, "cols": 90}),
            "result": forms.Textarea(attrs={"rows": 2, "cols": 90}),
        }


@admin.register(Action)
class ActionAdmin(admin.ModelAdmin):
    """Saves go through `chat.actions.services`, after the model's own checks (the form runs
    them: the schema as a schema, the URL template, headers, triggers), each problem shown
    beside its field."""

    form = ActionForm
    list_display = (
        "name",
        "site",
        "audience",
        "method",
        "host",
        "confirm",
        "enabled",
        "is_sample",
        "updated_at",
    )
    list_filter = ("enabled", "audience", "method", "confirm", "is_sample", "site")
    search_fields = ("name", "description", "url")
    fieldsets = (
        (None, {"fields": ("name", "site", "description", "enabled")}),
        (
            "The call",
            {
                "fields": ("method", "url", "headers", "timeout_seconds", "parameters"),
                "description": "Secrets are never stored here: write ${NAME} in a header and "
                "set NAME in the environment where the desk runs.",
            },
        ),
        ("Who and how", {"fields": ("audience", "confirm", "confirm_text", "result", "triggers")}),
        ("Record", {"fields": ("is_sample", "created_at", "updated_at")}),
    )
    readonly_fields = ("is_sample", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Action]:
        return super().get_queryset(request).select_related("site")

    @admin.display(description="host")
    def host(self, obj: Action) -> str:
        return url_template.host_of(obj.url)

    def save_model(self, request: HttpRequest, obj: Action, form, change: bool) -> None:
        action_services.action_save(action=obj)

    def delete_model(self, request: HttpRequest, obj: Action) -> None:
        action_services.action_delete(action=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Action]) -> None:
        action_services.actions_delete(queryset=queryset)


@admin.register(ActionCall)
class ActionCallAdmin(ViewOnly, admin.ModelAdmin):
    """Read-only: a call is part of its conversation's record."""

    list_display = (
        "created_at",
        "action_name",
        "status",
        "proposed_by",
        "reason",
        "http_status",
        "latency_ms",
        "conversation_link",
    )
    list_filter = ("status", "proposed_by", "action_name", "reason")
    search_fields = ("action_name", "text", "conversation__id")
    list_select_related = ("conversation",)
    fields = (
        "conversation_link",
        "message",
        "action",
        "action_name",
        "status",
        "proposed_by",
        "reason",
        "detail",
        "arguments",
        "http_status",
        "latency_ms",
        "fields",
        "text",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    date_hierarchy = "created_at"

    @admin.display(description="conversation")
    def conversation_link(self, obj: ActionCall) -> str:
        url = reverse("admin:chat_conversation_change", args=[obj.conversation_id])
        return format_html('<a href="{}">{}</a>', url, obj.conversation_id)
