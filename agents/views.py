"""The agent console: Django templates + htmx partials, kept live by /ws/console/.

Views are thin: read through `agents.selectors`, write through `agents.services`, render.
Every view is for active staff only; an action the conversation's state does not allow
(someone else took it, it is closed) answers 409 with the service's message in the partial,
which htmx is configured to swap in (see templates/agents/base.html).
"""

import functools
import json

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents import selectors, services
from agents.forms import (
    CannedReplyForm,
    NoteForm,
    ReplyForm,
    TicketCreateForm,
    TicketFilterForm,
    TicketUpdateForm,
)
from agents.models import Ticket
from chat.handoff import agent_name
from chat.models import Conversation

SEEN_SESSION_KEY = "console_seen"
SEEN_MAX = 500  # conversations remembered as opened, per session
CONFLICT = 409


def staff_required(view):
    """Active staff only. Others go to the admin login (`/admin/login/?next=…`); an htmx
    request is answered 403 with HX-Redirect so the whole page goes there, not a partial."""
    login_required_view = staff_member_required(view)

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not (user.is_active and user.is_staff) and getattr(request, "htmx", False):
            response = HttpResponse("Staff login required.", status=403)
            response["HX-Redirect"] = (
                reverse("admin:login")
                + "?next="
                + (request.htmx.current_url_abs_path or request.path)
            )
            return response
        return login_required_view(request, *args, **kwargs)

    return wrapper


# --- Inbox ----------------------------------------------------------------------------------


def _seen(request) -> dict:
    return request.session.get(SEEN_SESSION_KEY, {})


def _mark_seen(request, conversation_id) -> None:
    """Remember that I have read this conversation up to its newest customer message."""
    seen = dict(_seen(request))
    key = str(conversation_id)
    newest = selectors.newest_customer_message_id(conversation_id=conversation_id)
    if seen.get(key) == newest:
        return
    seen.pop(key, None)
    seen[key] = newest
    while len(seen) > SEEN_MAX:
        seen.pop(next(iter(seen)))
    request.session[SEEN_SESSION_KEY] = seen


def _inbox_context(request, current=None) -> dict:
    query = request.GET.get("q", "")[:200]
    channel = request.GET.get("channel", "")[:20]
    inbox = selectors.inbox(user=request.user, query=query, seen=_seen(request), channel=channel)
    return {
        "inbox": inbox,
        "channels": selectors.CONSOLE_CHANNELS,
        "channel": inbox.channel,
        "current_id": str(current) if current else "",
        "query": query,
        "section": "inbox",
    }


@staff_required
@require_GET
def inbox(request):
    return render(request, "agents/inbox.html", _inbox_context(request))


@staff_required
@require_GET
def inbox_partial(request):
    """The inbox's groups, for the search box and live refreshes. `current` (the conversation
    open in the pane) is marked read first, so what I am looking at is never unread."""
    current = selectors.parse_conversation_id(request.GET.get("current"))
    if current is not None:
        _mark_seen(request, current)
    return render(request, "agents/_inbox.html", _inbox_context(request, current))


# --- One conversation -----------------------------------------------------------------------


def _conversation_or_404(conversation_id) -> Conversation:
    conversation = selectors.conversation_for_console(conversation_id=conversation_id)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _pane_context(request, conversation: Conversation) -> dict:
    return {
        "conversation": conversation,
        "customer_label": selectors.customer_label(conversation),
        "verification": selectors.customer_verification(conversation),
        "messages": selectors.transcript(conversation_id=conversation.pk),
        "ratings": selectors.ratings(conversation=conversation),
        "tickets": selectors.conversation_tickets(conversation_id=conversation.pk),
        "ticket_form": TicketCreateForm(),
        **_controls_context(request, conversation),
    }


def _controls_context(
    request, conversation: Conversation, error: str = "", draft: str = ""
) -> dict:
    holds = (
        conversation.status == Conversation.Status.HUMAN
        and conversation.assigned_agent_id == request.user.pk
    )
    return {
        "conversation": conversation,
        "holds": holds,
        "holder_name": agent_name(conversation.assigned_agent),
        "error": error,
        "draft": draft,
    }


@staff_required
@require_GET
def conversation(request, conversation_id):
    conv = _conversation_or_404(conversation_id)
    _mark_seen(request, conv.pk)
    context = _pane_context(request, conv)
    htmx = request.htmx
    if htmx and htmx.target == "pane" and not htmx.history_restore_request:
        response = render(request, "agents/_pane.html", context)
    else:
        response = render(
            request, "agents/inbox.html", {**_inbox_context(request, conv.pk), **context}
        )
    response["Vary"] = "HX-Request, HX-Target"
    return response


@staff_required
@require_GET
def controls(request, conversation_id):
    """Status and actions (and, out of band, the reply box): refreshed on conv.status."""
    conv = _conversation_or_404(conversation_id)
    return render(request, "agents/_controls.html", _controls_context(request, conv))


@staff_required
@require_GET
def transcript(request, conversation_id):
    conv = _conversation_or_404(conversation_id)
    return render(
        request,
        "agents/_transcript.html",
        {
            "conversation": conv,
            "messages": selectors.transcript(conversation_id=conv.pk),
        },
    )


@staff_required
@require_POST
def draft(request, conversation_id, message_id, decision):
    """Send or discard the bot's draft (a channel in "draft" mode); the transcript again."""
    if decision not in ("send", "discard"):
        raise Http404("No such decision.")
    conv = _conversation_or_404(conversation_id)
    status = 200
    try:
        services.draft_decide(
            conversation_id=conv.pk,
            message_id=message_id,
            agent=request.user,
            send=decision == "send",
        )
    except services.NotAllowed:
        status = CONFLICT  # decided meanwhile: the transcript shows by whom
    return render(
        request,
        "agents/_transcript.html",
        {"conversation": conv, "messages": selectors.transcript(conversation_id=conv.pk)},
        status=status,
    )


ACTIONS = {
    "takeover": services.takeover,
    "handback": services.hand_back,
    "close": services.close,
}


@staff_required
@require_POST
def conversation_action(request, conversation_id, action: str):
    """Take over, hand back or close; re-renders the controls with the outcome."""
    _conversation_or_404(conversation_id)
    error, status = "", 200
    try:
        ACTIONS[action](conversation_id=conversation_id, agent=request.user)
    except services.NotAllowed as exc:
        error, status = str(exc), CONFLICT
    conv = _conversation_or_404(conversation_id)
    return render(
        request,
        "agents/_controls.html",
        _controls_context(request, conv, error=error),
        status=status,
    )


@staff_required
@require_POST
def reply(request, conversation_id):
    """Only the agent holding the conversation can reply; anyone else gets 409 and the
    service's message, and keeps the text they wrote."""
    conv = _conversation_or_404(conversation_id)
    form = ReplyForm(request.POST)
    if not form.is_valid():
        return render(
            request,
            "agents/_composer.html",
            _controls_context(
                request,
                conv,
                error="Write a reply first (at most 8,000 characters).",
                draft=request.POST.get("text", ""),
            ),
            status=400,
        )
    try:
        message = services.reply(
            conversation_id=conv.pk, agent=request.user, text=form.cleaned_data["text"]
        )
    except services.NotAllowed as exc:
        conv = _conversation_or_404(conversation_id)
        return render(
            request,
            "agents/_composer.html",
            _controls_context(request, conv, error=str(exc), draft=form.cleaned_data["text"]),
            status=CONFLICT,
        )
    response = render(request, "agents/_composer.html", _controls_context(request, conv))
    # console.js makes sure the message is on screen even if its socket missed the event.
    response["HX-Trigger"] = json.dumps({"cs:replied": {"id": message.pk}})
    return response


@staff_required
@require_GET
def canned_for_conversation(request, conversation_id):
    """Canned replies matching `q` (after the "/"), rendered for this conversation."""
    conv = _conversation_or_404(conversation_id)
    replies = selectors.canned_replies(query=request.GET.get("q", "")[:40], limit=8)
    return JsonResponse(
        {
            "replies": [
                {
                    "id": r.pk,
                    "shortcut": r.shortcut,
                    "title": r.title,
                    "text": services.canned_reply_render(
                        reply=r, conversation=conv, agent=request.user
                    ),
                }
                for r in replies
            ]
        }
    )


@staff_required
@require_http_methods(["GET", "POST"])
def conversation_tickets(request, conversation_id):
    """The conversation's tickets (GET, refreshed on console.ticket) or a new one (POST)."""
    conv = _conversation_or_404(conversation_id)
    form, status = TicketCreateForm(), 200
    if request.method == "POST":
        form = TicketCreateForm(request.POST)
        if form.is_valid():
            try:
                services.ticket_create(
                    subject=form.cleaned_data["subject"],
                    actor=request.user,
                    conversation_id=conv.pk,
                    priority=form.cleaned_data["priority"],
                )
                form = TicketCreateForm()
            except services.NotAllowed as exc:
                form.add_error(None, str(exc))
                status = 400
        else:
            status = 400
    return render(
        request,
        "agents/_conversation_tickets.html",
        {
            "conversation": conv,
            "ticket_form": form,
            "tickets": selectors.conversation_tickets(conversation_id=conv.pk),
        },
        status=status,
    )


# --- Tickets --------------------------------------------------------------------------------


def _ticket_list_context(request) -> dict:
    params = request.GET.copy()
    if "status" not in params:
        params["status"] = "unsolved"
    form = TicketFilterForm(params)
    filters = form.cleaned_data if form.is_valid() else {}
    return {
        "section": "tickets",
        "filter_form": form,
        "tickets": selectors.ticket_list(
            user=request.user,
            status=filters.get("status", ""),
            priority=filters.get("priority", ""),
            assignee=filters.get("assignee", ""),
        ),
    }


@staff_required
@require_GET
def tickets(request):
    return render(request, "agents/tickets.html", _ticket_list_context(request))


@staff_required
@require_GET
def ticket_list_partial(request):
    return render(request, "agents/_ticket_list.html", _ticket_list_context(request))


def _ticket_or_404(ticket_id) -> Ticket:
    ticket = selectors.ticket_detail(ticket_id=ticket_id)
    if ticket is None:
        raise Http404("No such ticket.")
    return ticket


def _props_context(ticket: Ticket, error: str = "") -> dict:
    return {
        "ticket": ticket,
        "staff": selectors.staff_users(),
        "error": error,
        "statuses": Ticket.Status.choices,
        "priorities": Ticket.Priority.choices,
    }


@staff_required
@require_GET
def ticket(request, ticket_id: int):
    ticket = _ticket_or_404(ticket_id)
    return render(
        request,
        "agents/ticket.html",
        {
            **_props_context(ticket),
            "notes": selectors.ticket_notes(ticket_id=ticket.pk),
            "section": "tickets",
        },
    )


@staff_required
@require_http_methods(["GET", "POST"])
def ticket_props(request, ticket_id: int):
    """Status, priority and assignee: shown (GET) or changed (POST → services.ticket_update)."""
    ticket = _ticket_or_404(ticket_id)
    if request.method == "GET":
        return render(request, "agents/_ticket_props.html", _props_context(ticket))
    form = TicketUpdateForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(e for errs in form.errors.values() for e in errs)
        return render(
            request, "agents/_ticket_props.html", _props_context(ticket, error=errors), status=400
        )
    data = form.cleaned_data
    # Only what changed is passed on.
    assignee = data["assignee"] if data["assignee"] not in ("", "none") else None
    try:
        services.ticket_update(
            ticket_id=ticket.pk,
            actor=request.user,
            status=data["status"] if data["status"] not in ("", ticket.status) else None,
            priority=data["priority"] if data["priority"] not in ("", ticket.priority) else None,
            assignee=assignee if assignee is not None and assignee != ticket.assignee else None,
            unassign=data["assignee"] == "none" and ticket.assignee_id is not None,
        )
    except services.NotAllowed as exc:
        return render(
            request,
            "agents/_ticket_props.html",
            _props_context(ticket, error=str(exc)),
            status=CONFLICT,
        )
    return render(request, "agents/_ticket_props.html", _props_context(_ticket_or_404(ticket_id)))


@staff_required
@require_http_methods(["GET", "POST"])
def ticket_notes(request, ticket_id: int):
    """Internal notes: listed (GET) or added (POST → services.note_add). Staff only."""
    ticket = _ticket_or_404(ticket_id)
    error, status = "", 200
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            try:
                services.note_add(
                    ticket_id=ticket.pk, author=request.user, text=form.cleaned_data["text"]
                )
            except services.NotAllowed as exc:
                error, status = str(exc), 400
        else:
            error, status = "Write a note first (at most 8,000 characters).", 400
    return render(
        request,
        "agents/_ticket_notes.html",
        {
            "ticket": ticket,
            "notes": selectors.ticket_notes(ticket_id=ticket.pk),
            "error": error,
        },
        status=status,
    )


# --- Canned replies -------------------------------------------------------------------------


@staff_required
@require_http_methods(["GET", "POST"])
def canned(request):
    form = CannedReplyForm()
    if request.method == "POST":
        form = CannedReplyForm(request.POST)
        if form.is_valid():
            try:
                services.canned_reply_save(actor=request.user, **form.cleaned_data)
                return redirect("agents:canned")
            except services.NotAllowed as exc:
                form.add_error(None, str(exc))
    return render(
        request,
        "agents/canned.html",
        {
            "replies": selectors.canned_replies(),
            "form": form,
            "section": "canned",
        },
    )


@staff_required
@require_http_methods(["GET", "POST"])
def canned_edit(request, reply_id: int):
    reply = selectors.canned_reply(reply_id=reply_id)
    if reply is None:
        raise Http404("No such canned reply.")
    initial = {"shortcut": reply.shortcut, "title": reply.title, "text": reply.text}
    form = CannedReplyForm(initial=initial, reply_id=reply.pk)
    if request.method == "POST":
        form = CannedReplyForm(request.POST, reply_id=reply.pk)
        if form.is_valid():
            try:
                services.canned_reply_save(
                    actor=request.user, reply_id=reply.pk, **form.cleaned_data
                )
                return redirect("agents:canned")
            except services.NotAllowed as exc:
                form.add_error(None, str(exc))
    return render(
        request, "agents/canned_edit.html", {"reply": reply, "form": form, "section": "canned"}
    )
