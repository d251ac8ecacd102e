"""Admin for WeCom's own records, read-only: where each account's reading stands, and each
customer's reply window (what decides whether a reply may go). The callback's sync token is
never shown."""

from django.contrib import admin

from connectors.wecom.models import WeComAccount, WeComCustomer


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WeComAccount)
class WeComAccountAdmin(ReadOnly):
    list_display = ("inbox", "sync_requested_at", "synced_at", "handovers_pending")
    fields = ("inbox", "cursor", "sync_requested_at", "synced_at", "handovers_pending")


@admin.register(WeComCustomer)
class WeComCustomerAdmin(ReadOnly):
    list_display = (
        "external_userid",
        "inbox",
        "last_customer_message_at",
        "sent_since",
        "service_state",
        "servicer_userid",
        "handover_pending",
    )
    list_filter = ("inbox", "service_state")
    search_fields = ("external_userid",)
    fields = list_display + ("menu_sent",)
