"""Admin for outbound webhooks: endpoints (the signing secret shown once, when made or
rolled) and the delivery log (read-only, with a redeliver action)."""

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from webhooks import services
from webhooks.events import EVENTS
from webhooks.models import WebhookDelivery, WebhookEndpoint


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=[(name, name) for name in EVENTS], widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("site", "url", "events", "active", "description")

    def clean_events(self) -> list[str]:
        chosen = set(self.cleaned_data["events"])
        return [name for name in EVENTS if name in chosen]  # the documented order


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "site", "event_list", "active", "created_at")
    list_filter = ("active", "site")
    list_select_related = ("site",)
    search_fields = ("url", "description", "site__name")
    readonly_fields = ("created_at",)
    actions = ["roll_secret"]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        return {"events": list(EVENTS), **super().get_changeform_initial_data(request)}

    def save_model(self, request, obj: WebhookEndpoint, form, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            self._show_secret(request, obj, obj.secret)

    def _show_secret(self, request: HttpRequest, obj: WebhookEndpoint, secret: str) -> None:
        self.message_user(
            request,
            f"The signing secret of {obj.url} is {secret} — copy it now, it is not shown "
            "again. Verify each delivery's X-Desk-Signature with it (docs/webhooks.md).",
            messages.WARNING,
        )

    @admin.display(description="events")
    def event_list(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events)

    @admin.action(description="Roll the signing secret (shown once)", permissions=["change"])
    def roll_secret(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]):
        for endpoint in queryset:
            secret = services.endpoint_secret_roll(endpoint=endpoint)
            self.log_change(request, endpoint, "Rolled the signing secret.")
            self._show_secret(request, endpoint, secret)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The delivery log. Rows are written by the desk's services and the delivery process;
    here they are only read, and queued again by the redeliver action."""

    list_display = (
        "created_at",
        "event",
        "endpoint",
        "conversation_id",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "event", "endpoint")
    list_select_related = ("endpoint",)
    search_fields = ("conversation_id", "event_id", "delivery_id")
    date_hierarchy = "created_at"
    actions = ["redeliver"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        # The log itself is read-only to everyone; queueing again is a change to it.
        return request.user.has_perm("webhooks.change_webhookdelivery")

    @admin.action(description="Redeliver the selected deliveries", permissions=["redeliver"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]):
        count = services.deliveries_redeliver(pks=queryset.values_list("pk", flat=True))
        self.message_user(
            request,
            ngettext("Queued %d delivery again.", "Queued %d deliveries again.", count) % count,
            messages.SUCCESS,
        )
