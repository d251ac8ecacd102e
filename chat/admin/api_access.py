"""Access to the API: keys (made and revoked here, the secret shown once) and the sessions
that API calls made."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from chat.api import keys as api_keys
from chat.models import ApiKey, ApiScope, ApiSession


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
