"""The agent console, mounted at /console/ (staff only)."""

from django.urls import path

from agents import knowledge, reports, views
from agents.playground import views as playground

app_name = "agents"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path("inbox/", views.inbox_partial, name="inbox-partial"),
    path("c/<uuid:conversation_id>/", views.conversation, name="conversation"),
    path("c/<uuid:conversation_id>/controls/", views.controls, name="controls"),
    path("c/<uuid:conversation_id>/transcript/", views.transcript, name="transcript"),
    path(
        "c/<uuid:conversation_id>/takeover/",
        views.conversation_action,
        {"action": "takeover"},
        name="takeover",
    ),
    path(
        "c/<uuid:conversation_id>/handback/",
        views.conversation_action,
        {"action": "handback"},
        name="handback",
    ),
    path(
        "c/<uuid:conversation_id>/close/",
        views.conversation_action,
        {"action": "close"},
        name="close",
    ),
    path("c/<uuid:conversation_id>/reply/", views.reply, name="reply"),
    path(
        "c/<uuid:conversation_id>/draft/<int:message_id>/<str:decision>/",
        views.draft,
        name="draft",
    ),
    path(
        "c/<uuid:conversation_id>/canned/",
        views.canned_for_conversation,
        name="canned-for-conversation",
    ),
    path(
        "c/<uuid:conversation_id>/tickets/", views.conversation_tickets, name="conversation-tickets"
    ),
    path("tickets/", views.tickets, name="tickets"),
    path("tickets/list/", views.ticket_list_partial, name="ticket-list"),
    path("tickets/<int:ticket_id>/", views.ticket, name="ticket"),
    path("tickets/<int:ticket_id>/props/", views.ticket_props, name="ticket-props"),
    path("tickets/<int:ticket_id>/notes/", views.ticket_notes, name="ticket-notes"),
    path("canned/", views.canned, name="canned"),
    path("canned/<int:reply_id>/", views.canned_edit, name="canned-edit"),
    path("reports/", reports.reports, name="reports"),
    path("playground/", playground.page, name="playground"),
    path("playground/settings/", playground.settings_form, name="playground-settings"),
    path("playground/preview/", playground.preview, name="playground-preview"),
    path("playground/send/", playground.send, name="playground-send"),
    path("playground/save/", playground.save, name="playground-save"),
    path("playground/export/", playground.export, name="playground-export"),
    path("knowledge/", knowledge.knowledge, name="knowledge"),
    path("knowledge/<int:article_id>/", knowledge.knowledge_edit, name="knowledge-edit"),
    path("knowledge/new/", knowledge.knowledge_edit, name="knowledge-new"),
]
