"""Admin for tickets (with their internal notes) and canned replies."""

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from agents import services
from agents.models import CannedReply, Ticket, TicketNote
from chat import group_events
from runtime.broadcast import after_commit


class TicketNoteInline(admin.TabularInline):
    model = TicketNote
    extra = 1
    fields = ("text", "author", "created_at")
    readonly_fields = ("author", "created_at")
    # Notes are the ticket's record: staff add to it, nobody rewrites or removes a note.
    can_delete = False

    def has_change_permission(self, request: HttpRequest, obj: Ticket | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[TicketNote]:
        return super().get_queryset(request).select_related("author")


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "subject",
        "status",
        "priority",
        "assignee",
        "conversation_link",
        "updated_at",
    )
    list_display_links = ("id", "subject")
    list_filter = ("status", "priority", "assignee")
    list_select_related = ("assignee",)
    # Django removes the duplicates a match in several notes would give.
    search_fields = ("subject", "notes__text")
    raw_id_fields = ("conversation",)
    readonly_fields = ("created_at", "updated_at", "solved_at")
    inlines = [TicketNoteInline]

    @admin.display(description="conversation", ordering="conversation")
    def conversation_link(self, obj: Ticket) -> str:
        if obj.conversation_id is None:
            return "—"
        url = reverse("admin:chat_conversation_change", args=[obj.conversation_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.conversation_id)[:8])

    def save_model(self, request: HttpRequest, obj: Ticket, form: ModelForm, change: bool) -> None:
        # solved_at is read-only in the form; keep it in step with the status set here.
        obj.set_status(obj.status)
        super().save_model(request, obj, form, change)
        # Agents with the console open see the change live, as with changes made there.
        after_commit(
            (
                group_events.CONSOLE_GROUP,
                group_events.console_ticket(
                    ticket_id=obj.pk, reason="updated" if change else "created"
                ),
            )
        )

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        # Notes are only ever added (the inline cannot change or delete one). A new note goes
        # through the service, signed by whoever is logged in (the form has no author field
        # to forge), so the ticket's updated_at moves and open consoles hear of it.
        for note in formset.save(commit=False):
            if isinstance(note, TicketNote) and note.pk is None:
                services.note_add(ticket_id=form.instance.pk, author=request.user, text=note.text)


@admin.register(CannedReply)
class CannedReplyAdmin(admin.ModelAdmin):
    list_display = ("shortcut", "title", "updated_at")
    search_fields = ("shortcut", "title", "text")
    readonly_fields = ("created_by", "updated_at")
    fields = ("shortcut", "title", "text", "created_by", "updated_at")

    def save_model(
        self, request: HttpRequest, obj: CannedReply, form: ModelForm, change: bool
    ) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
