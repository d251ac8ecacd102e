"""The playground's views: the page, its htmx partials (a pane's settings, the prompt
preview, save as bot profile), the question whose answer streams back as Server-Sent Events,
and the session's JSON export.

Views are thin: validate with `forms`, read through `selectors`, write through `services`,
render. All are for active staff only.
"""

import datetime as dt

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from agents import selectors as agent_selectors
from agents.playground import selectors, services
from agents.playground.forms import (
    PROFILE_FIELDS,
    PromptForm,
    SaveForm,
    SendForm,
    form_error_text,
)
from agents.playground.selectors import PANES
from agents.views import staff_required
from chat import answering, turns
from chat import services as chat_services
from chat.api.listening import AnswerListener
from chat.api.sse import SSE_HEADERS, turn_stream
from chat.models import BotProfile, Message
from chat.prompting import language_name
from runtime.aio import db

# The new conversation's id travels in a header: the stream itself stays docs/protocol.md's.
CONVERSATION_HEADER = "X-Playground-Conversation"
LANGUAGES = (
    "en",
    "en-GB",
    "de",
    "fr",
    "es",
    "it",
    "nl",
    "pt-BR",
    "pl",
    "ru",
    "tr",
    "ar",
    "hi",
    "ja",
    "ko",
    "zh-CN",
    "zh-TW",
)
REGIONS = (
    "United States",
    "United Kingdom",
    "Germany",
    "France",
    "Spain",
    "Italy",
    "Brazil",
    "India",
    "Japan",
    "China",
    "Taiwan",
    "Australia",
    "Canada",
)
TIMEZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Paris",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
)
HANDOFF_REFUSAL = (
    "In a customer's chat this message asks for a human agent: the bot would not "
    "answer, a ticket would open and agents would be alerted. The playground "
    "does not hand off; rephrase to try the bot."
)


def _pane_key(value) -> str:
    if value not in PANES:
        raise Http404("No such pane.")
    return value


def _pane_context(
    pane: str, profile: BotProfile, *, values: dict | None = None, message: str = ""
) -> dict:
    if values is None:
        values = {name: getattr(profile, name) for name in PROFILE_FIELDS}
        values |= {"language": "en", "region": "", "timezone": ""}
    return {
        "pane": pane,
        "title": PANES[pane],
        "profile": profile,
        "profiles": selectors.profiles(),
        "values": values,
        "message": message,
        "preview": selectors.system_prompt_preview(
            profile=profile,
            template=values["system_prompt"],
            language=values["language"],
            region=values["region"],
            timezone_name=values["timezone"],
        ),
        "languages": [(code, language_name(code)) for code in LANGUAGES],
        "regions": REGIONS,
        "timezones": TIMEZONES,
    }


@staff_required
@require_GET
def page(request):
    profile = selectors.profile_for(profile_id=None)
    return render(
        request,
        "agents/playground.html",
        {
            "section": "playground",
            "message_max": settings.CHAT["MAX_MESSAGE_CHARS"],
            "panes": [_pane_context(pane, profile) for pane in PANES],
        },
    )


@staff_required
@require_GET
def settings_form(request):
    """A pane's settings filled from a profile (another one chosen, or Reset)."""
    pane = _pane_key(request.GET.get("pane"))
    try:
        profile_id = int(request.GET["profile"]) if request.GET.get("profile") else None
    except ValueError:
        raise Http404("No such bot profile.") from None
    profile = selectors.profile_for(profile_id=profile_id)
    if profile is None:
        raise Http404("No such bot profile.")
    values = None
    if request.GET.get("keep_locale"):  # a new profile, the same customer
        form = PromptForm(request.GET)
        form.is_valid()
        values = {name: getattr(profile, name) for name in PROFILE_FIELDS} | {
            name: form.cleaned_data.get(name) or "" for name in ("language", "region", "timezone")
        }
    return render(
        request,
        "agents/_playground_settings.html",
        {"p": _pane_context(pane, profile, values=values)},
    )


@staff_required
@require_POST
def preview(request):
    """The pane's system prompt with its variables filled in (POST: prompts are long)."""
    form = PromptForm(request.POST)
    if not form.is_valid():
        return render(request, "agents/_playground_preview.html", {"error": form_error_text(form)})
    data = form.cleaned_data
    return render(
        request,
        "agents/_playground_preview.html",
        {
            "preview": selectors.system_prompt_preview(
                profile=data["profile"],
                template=data["system_prompt"],
                language=data["language"],
                region=data["region"],
                timezone_name=data["timezone"],
            )
        },
    )


@staff_required
@require_POST
def save(request):
    """Save as bot profile, in two steps: without `confirm`, what would change (and where);
    with it, the write. Success re-renders the pane's settings from the saved profile."""
    pane = _pane_key(request.POST.get("pane"))
    if request.POST.get("cancel"):
        return render(request, "agents/_playground_save.html", {"pane": pane})
    form = SaveForm(request.POST)
    user = request.user
    context = {
        "pane": pane,
        "confirming": True,
        "can_change": user.has_perm("chat.change_botprofile"),
        "can_add": user.has_perm("chat.add_botprofile"),
    }
    if not form.is_valid():
        return render(
            request, "agents/_playground_save.html", {**context, "error": form_error_text(form)}
        )
    data = form.cleaned_data
    source, values = data["profile"], form.profile_values()
    new_name = data["new_name"] if data["target"] == "new" else ""
    context |= {
        "profile": source,
        "changes": selectors.profile_changes(source, values),
        "target": data["target"] or "update",
        "new_name": data["new_name"],
    }
    if not data["confirm"]:
        return render(request, "agents/_playground_save.html", context)
    try:
        profile, created = services.profile_save(
            user=user, source=source, values=values, new_name=new_name
        )
    except services.SaveRefused as exc:
        return render(request, "agents/_playground_save.html", {**context, "error": str(exc)})
    except ValidationError as exc:
        return render(
            request, "agents/_playground_save.html", {**context, "error": " ".join(exc.messages)}
        )
    locale = {name: data[name] for name in ("language", "region", "timezone")}
    response = render(
        request,
        "agents/_playground_settings.html",
        {
            "p": _pane_context(
                pane,
                profile,
                values={**values, **locale},
                message=f"{'Created' if created else 'Saved'} bot profile “{profile.name}”.",
            )
        },
    )
    retarget(response, f"#{pane}-settings")
    reswap(response, "outerHTML")
    return response


def _refusal(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": {"message": message}}, status=status)


# Async: the response streams for as long as the answer does, without holding a thread.
# staff_member_required (user_passes_test) and require_POST both keep a coroutine view async.
@staff_member_required
@require_POST
async def send(request: HttpRequest):
    """One question with one pane's settings; the answer streams back as Server-Sent Events
    (docs/protocol.md's frames: message.ack, bot.start, bot.delta…, bot.done)."""
    user = await request.auser()
    form = SendForm(request.POST)
    if not await db(form.is_valid)():
        return _refusal(400, form_error_text(form))
    data = form.cleaned_data
    conversation = None
    if data["conversation"] is not None:
        conversation = await db(selectors.own_conversation)(
            user=user, conversation_id=data["conversation"]
        )
        if conversation is None:
            return _refusal(404, "No such playground conversation: start a new session.")
    if await db(selectors.asks_for_human)(
        conversation_id=conversation.pk if conversation else None, text=data["message"]
    ):
        return _refusal(409, HANDOFF_REFUSAL)
    if conversation is not None and not await answering.answer_ended(conversation.pk):
        return _refusal(409, "An answer is still streaming here: wait for it, or press Stop.")
    conversation = await db(services.playground_open)(
        user=user,
        conversation=conversation,
        profile=data["profile"],
        language=data["language"],
        region=data["region"],
        timezone_name=data["timezone"],
    )

    async def record(message: Message, created: bool) -> None:
        await db(services.answer_settings_record)(
            conversation_id=conversation.pk,
            question_id=message.pk,
            answer_settings=form.answer_settings(),
        )

    listener = await AnswerListener(conversation).open()
    try:
        turn = await turns.customer_says(
            conversation=conversation,
            text=data["message"],
            client_id=None,
            channel_name=listener.channel_name,
            options=form.options(),
            on_stored=record,
        )
    except chat_services.ConversationClosed:
        await listener.close()
        return _refusal(409, "This playground conversation is closed: start a new session.")
    except BaseException:
        await listener.close()
        raise
    return StreamingHttpResponse(
        turn_stream(listener, conversation, turn),
        content_type="text/event-stream",
        headers={**SSE_HEADERS, CONVERSATION_HEADER: str(conversation.pk)},
    )


@staff_required
@require_GET
def export(request):
    """The session as a JSON download: ?a=…&b=… name the panes' conversations."""
    ids = {
        pane: agent_selectors.parse_conversation_id(request.GET[pane])
        for pane in PANES
        if request.GET.get(pane)
    }
    if not ids or None in ids.values():
        raise Http404("Name the session's conversations.")
    data = selectors.session_export(user=request.user, conversation_ids=ids)
    if data is None:
        raise Http404("No such playground conversation.")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    response = JsonResponse(data, json_dumps_params={"ensure_ascii": False, "indent": 2})
    response["Content-Disposition"] = f'attachment; filename="playground-{stamp}.json"'
    return response
