"""The desk's configuration: the sites that embed the widget, the bot's profiles and the
fallback rules that answer when the model cannot."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from chat import services
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
    """The identity secret is never a field, nor shown again: the action below makes a new one
    and shows it once; otherwise only whether there is one, and since when."""

    list_display = ("name", "key", "language", "is_active", "has_identity_secret", "created_at")
    list_filter = ("is_active", "language")
    search_fields = ("name", "key", "allowed_origins")
    readonly_fields = ("identity_secret_status", "created_at")
    actions = ["make_identity_secret"]

    @admin.display(description="identity secret", boolean=True)
    def has_identity_secret(self, obj: Site) -> bool:
        return bool(obj.identity_secret)

    @admin.display(description="identity secret")
    def identity_secret_status(self, obj: Site) -> str:
        if not obj.identity_secret:
            return (
                "Not set: the widget cannot verify customers. Make one with the action "
                "“Make a new identity secret” on the list of sites."
            )
        made = obj.identity_secret_created_at
        return f"Set (made {made:%Y-%m-%d %H:%M} UTC); shown only when made." if made else "Set."

    @admin.action(description="Make a new identity secret", permissions=["change"])
    def make_identity_secret(self, request: HttpRequest, queryset: QuerySet[Site]):
        for site in queryset:
            secret = services.site_identity_secret_renew(site=site)
            # Django logs its forms' saves, not actions; the record holds no secret.
            self.log_change(request, site, "Made a new identity secret (action).")
            self.message_user(
                request,
                f"The new identity secret of site “{site.name}” ({site.key}) is {secret} — copy "
                "it to your back end now, it is not shown again. Tokens signed with the "
                "previous one no longer verify customers.",
                messages.WARNING,
            )
