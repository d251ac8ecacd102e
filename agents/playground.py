"""The staff playground, /console/playground/: a support lead tries the bot with other settings
(system prompt, sampling, language, region) and compares them before making them live.

An answer here is a customer's answer. Each pane of the page is a Conversation with channel
"playground", owned by the staff member who opened it (nobody holds its customer token, so no
customer can reach it); a question goes through `chat.turns.customer_says` with the pane's
`AnswerOptions`, and the answer comes back through the channel layer and the worker as
Server-Sent Events, read by the same `AnswerListener` and written by the same `sse()` as the
chat API's stream. Deadlines, fallback and the profile's clamping are the live ones.

Sections as the console's layers: forms, reads, writes, views. The writes (`playground_open`,
`answer_settings_record`, `profile_save`) belong in agents/services.py and the reads in
agents/selectors.py once the feature settles; they sit here while one engineer owns it.
"""

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import transaction
from django.http import Http404, HttpRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget

from agents import selectors as agent_selectors
from agents.forms import AgentTextField
from agents.views import staff_required
from chat import answering, handoff_phrases, turns
from chat import selectors as chat_selectors
from chat import services as chat_services
from chat.answering import AnswerOptions, db
from chat.api.listening import AnswerListener
from chat.api.v1 import SSE_HEADERS, turn_stream
from chat.models import BotProfile, Conversation, Message
from chat.prompting import language_name, render_system_prompt

PLAYGROUND = Conversation.Channel.PLAYGROUND
PANES = {"a": "A", "b": "B"}  # side by side: two settings, two conversations
# The new conversation's id travels in a header: the stream itself stays docs/protocol.md's.
CONVERSATION_HEADER = "X-Playground-Conversation"
PROFILE_FIELDS = ("system_prompt", "temperature", "top_p", "max_tokens", "frequency_penalty")
EXPORT_MESSAGES = 1000
LANGUAGES = ("en", "en-GB", "de", "fr", "es", "it", "nl", "pt-BR", "pl", "ru", "tr", "ar",
             "hi", "ja", "ko", "zh-CN", "zh-TW")
REGIONS = ("United States", "United Kingdom", "Germany", "France", "Spain", "Italy", "Brazil",
           "India", "Japan", "China", "Taiwan", "Australia", "Canada")
TIMEZONES = ("UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "America/New_York",
             "America/Chicago", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Kolkata",
             "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney")
HANDOFF_REFUSAL = ("In a customer's chat this message asks for a human agent: the bot would not "
                   "answer, a ticket would open and agents would be alerted. The playground "
                   "does not hand off; rephrase to try the bot.")


# --- Forms --------------------------------------------------------------------------------------


class PromptForm(forms.Form):
    """What the system prompt is rendered with. `profile` cleans to a BotProfile: the one
    chosen, or without one the live default (possibly the built-in, unsaved one)."""

    profile = forms.IntegerField(required=False, min_value=1)
    # Empty: the profile's own prompt, as AnswerOptions treats it.
    system_prompt = AgentTextField(max_length=16000, required=False)
    language = forms.CharField(max_length=35, required=False, validators=[RegexValidator(
        r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", "A language tag such as en or zh-CN.")])
    region = AgentTextField(max_length=64, required=False, single_line=True)
    timezone = forms.CharField(max_length=64, required=False)

    def clean_timezone(self) -> str:
        name = self.cleaned_data["timezone"].strip()
        if name:
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValidationError("An IANA time zone such as Europe/Berlin.") from None
        return name

    def clean(self):
        data = super().clean()
        profile = profile_for(profile_id=data.get("profile"))
        if profile is None:
            self.add_error("profile", "No such bot profile.")
        else:
            data["profile"] = profile
        return data


class SettingsForm(PromptForm):
    """A pane's settings, in the ranges `chat.answering._prompt_parts` clamps to: what is
    recorded for an answer is what the worker got."""

    temperature = forms.FloatField(min_value=0.0, max_value=2.0)
    top_p = forms.FloatField(min_value=0.01, max_value=1.0)
    max_tokens = forms.IntegerField(min_value=1)
    frequency_penalty = forms.FloatField(min_value=-2.0, max_value=2.0)

    def clean(self):
        data = super().clean()
        profile, max_tokens = data.get("profile"), data.get("max_tokens")
        if isinstance(profile, BotProfile) and max_tokens and max_tokens > profile.max_tokens:
            self.add_error("max_tokens", f"At most {profile.max_tokens}, the profile's limit.")
        return data

    def profile_values(self) -> dict:
        """The BotProfile fields these settings would store."""
        data = self.cleaned_data
        values = {name: data[name] for name in PROFILE_FIELDS}
        values["system_prompt"] = data["system_prompt"] or data["profile"].system_prompt
        return values

    def options(self) -> AnswerOptions:
        data = self.cleaned_data
        return AnswerOptions(max_tokens=data["max_tokens"], temperature=data["temperature"],
                             top_p=data["top_p"], frequency_penalty=data["frequency_penalty"],
                             system_prompt=data["system_prompt"] or None)

    def answer_settings(self) -> dict:
        """What one answer was asked with, as the export shows it."""
        data = self.cleaned_data
        profile = data["profile"]
        return {"profile": profile.name, "profile_id": profile.pk, **self.profile_values(),
                "system_prompt_overridden": bool(data["system_prompt"]) and (
                    data["system_prompt"] != profile.system_prompt),
                "language": data["language"], "region": data["region"],
                "timezone": data["timezone"]}


class SendForm(SettingsForm):
    message = AgentTextField(max_length=settings.CHAT["MAX_MESSAGE_CHARS"])
    conversation = forms.UUIDField(required=False)  # none yet: a new playground conversation


class SaveForm(SettingsForm):
    target = forms.ChoiceField(choices=[("update", "update"), ("new", "new")], required=False)
    new_name = AgentTextField(max_length=100, required=False, single_line=True)
    confirm = forms.BooleanField(required=False)

    def clean(self):
        data = super().clean()
        if data.get("target") == "new" and not data.get("new_name"):
            self.add_error("new_name", "Name the new profile.")
        return data


def form_error_text(form: forms.Form) -> str:
    return " ".join(f"{'' if name == '__all__' else name.replace('_', ' ') + ': '}{error}"
                    for name, errors in form.errors.items() for error in errors)


# --- Reads --------------------------------------------------------------------------------------


def profiles() -> list[BotProfile]:
    return list(BotProfile.objects.order_by("-is_default", "name"))


def profile_for(*, profile_id: int | None) -> BotProfile | None:
    """Profile `profile_id`; without one, what a conversation naming no profile gets."""
    if profile_id is None:
        return chat_selectors.bot_profile_for(Conversation())
    return BotProfile.objects.filter(pk=profile_id).first()


def own_conversation(*, user: AbstractBaseUser, conversation_id) -> Conversation | None:
    """`user`'s playground conversation: never a customer's, nor another staff member's."""
    return Conversation.objects.filter(pk=conversation_id, channel=PLAYGROUND,
                                       metadata__playground__staff_id=user.pk).first()


def asks_for_human(*, conversation_id, text: str) -> bool:
    """Whether `text` would hand a customer's conversation to a human, by the rules of
    chat.selectors.asks_for_human, asked before the text is stored."""
    cfg = settings.CHAT
    if handoff_phrases.asks_for_human(text, cfg["HANDOFF_PHRASES"]):
        return True
    if conversation_id is None:
        return False
    # Any id is "before" a message not stored yet.
    previous = chat_selectors.last_bot_text(conversation_id=conversation_id, before_id=2**62)
    return handoff_phrases.accepts_offer(text, previous, offers=cfg["HANDOFF_OFFERS"],
                                         affirmatives=cfg["HANDOFF_AFFIRMATIVES"])


def system_prompt_preview(*, profile: BotProfile, template: str, language: str, region: str,
                          timezone_name: str) -> str:
    """The system prompt as the model would get it now (a playground conversation has no
    site: {site_name} is the profile's, as in `chat.answering._prompt_parts`)."""
    return render_system_prompt(template or profile.system_prompt, site_name=profile.site_name,
                                language=language, region=region, timezone=timezone_name,
                                now=timezone.now())


@dataclass(frozen=True)
class Change:
    label: str
    old: object
    new: object


def profile_changes(profile: BotProfile, values: dict) -> list[Change]:
    changes = []
    for name, new in values.items():
        old = getattr(profile, name)
        if old != new:
            label = str(BotProfile._meta.get_field(name).verbose_name).capitalize()
            if name == "system_prompt":  # too long for a table cell: its size says enough
                old, new = f"{len(old)} characters", f"{len(new)} characters, edited"
            changes.append(Change(label, old, new))
    return changes


def tokens_per_second(completion_tokens: int | None, ttft_ms: int | None,
                      total_ms: int | None) -> float | None:
    """Generation speed: completion tokens over the time from the first token to the end
    (the whole answer's time when that is unknown or nil). playground.js computes the same."""
    if not completion_tokens or not total_ms:
        return None
    span = total_ms - ttft_ms if ttft_ms is not None and total_ms > ttft_ms else total_ms
    return round(completion_tokens * 1000 / span, 1)


def session_export(*, user: AbstractBaseUser, conversation_ids: dict) -> dict | None:
    """The panes' conversations (pane → conversation id) as stored: every message, with each
    answer the settings it was asked with, the exact prompt the model saw and its figures.
    None if any of them is not `user`'s playground conversation."""
    conversations = {pane: own_conversation(user=user, conversation_id=cid)
                     for pane, cid in conversation_ids.items()}
    if not conversations or None in conversations.values():
        return None
    panes = []
    for pane, conversation in conversations.items():
        asked = conversation.metadata.get("playground", {}).get("answers", {})
        messages, totals, question = [], {"answers": 0, "prompt_tokens": 0,
                                          "completion_tokens": 0, "total_ms": 0}, None
        for m in chat_selectors.conversation_history(conversation_id=conversation.pk,
                                                     limit=EXPORT_MESSAGES):
            item = {"id": m.pk, "role": m.role, "text": m.text, "created_at": m.created_at}
            if m.role == Message.Role.CUSTOMER:
                question = m.pk
            elif m.role == Message.Role.BOT:
                # The playground sends one question at a time: an answer is the last one's.
                item |= {
                    "reply_to": question, "settings": asked.get(str(question)),
                    "model": m.model_name, "prompt": m.prompt,
                    "figures": {
                        "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens,
                        "ttft_ms": m.ttft_ms, "total_ms": m.total_ms,
                        "tokens_per_second": tokens_per_second(m.completion_tokens, m.ttft_ms,
                                                               m.total_ms),
                        "finish_reason": m.finish_reason, "fallback": m.is_fallback,
                        "partial": m.is_partial},
                }
                totals["answers"] += 1
                totals["prompt_tokens"] += m.prompt_tokens or 0
                totals["completion_tokens"] += m.completion_tokens or 0
                totals["total_ms"] += m.total_ms or 0
            messages.append(item)
        panes.append({"pane": PANES[pane], "conversation_id": str(conversation.pk),
                      "channel": conversation.channel, "messages": messages, "totals": totals})
    return {"exported_at": timezone.now(), "exported_by": user.get_username(), "panes": panes}


# --- Writes -------------------------------------------------------------------------------------


class SaveRefused(Exception):
    """The settings cannot be saved as asked (no permission, nothing to change)."""


def playground_open(*, user: AbstractBaseUser, conversation: Conversation | None,
                    profile: BotProfile, language: str, region: str,
                    timezone_name: str) -> Conversation:
    """`conversation` (from `own_conversation`) set to the pane's profile and locale, or a new
    playground conversation of `user`'s with them. Its profile is what answers are clamped
    to; its locale fills the system prompt's variables."""
    with transaction.atomic():
        if conversation is None:
            # The customer token is dropped: nobody resumes a playground conversation.
            conversation, _token = chat_services.conversation_start(
                language=language, region=region, timezone_name=timezone_name,
                channel=PLAYGROUND, metadata={"playground": {
                    "staff_id": user.pk, "staff": user.get_username(), "answers": {}}})
        wanted = {"bot_profile_id": profile.pk, "language": language, "region": region,
                  "timezone": timezone_name}
        changes = {name: value for name, value in wanted.items()
                   if getattr(conversation, name) != value}
        if changes:
            Conversation.objects.filter(pk=conversation.pk).update(**changes,
                                                                   updated_at=timezone.now())
            for name, value in changes.items():
                setattr(conversation, name, value)
    return conversation


def answer_settings_record(*, conversation_id, question_id: int, answer_settings: dict) -> None:
    """Remember what the answer to `question_id` was asked with (Message has no place for
    sampling; the export reads it back from here)."""
    with transaction.atomic():
        metadata = (Conversation.objects.select_for_update().values_list("metadata", flat=True)
                    .get(pk=conversation_id))
        playground = metadata.setdefault("playground", {})
        playground.setdefault("answers", {})[str(question_id)] = answer_settings
        Conversation.objects.filter(pk=conversation_id).update(metadata=metadata)


def profile_save(*, user: AbstractBaseUser, source: BotProfile, values: dict,
                 new_name: str = "") -> tuple[BotProfile, bool]:
    """Store `values` (PROFILE_FIELDS) into `source`, or into a new profile named `new_name`
    that starts from `source`'s other fields; the built-in default, never stored yet, is
    stored as the default profile. Returns (profile, created), recorded in admin history as
    `user`'s. Raises SaveRefused, or ValidationError for what the model refuses."""
    creating = bool(new_name) or source.pk is None
    # The same permissions admin asks for: a staff member who may not edit profiles there
    # may not edit them here either.
    if not user.has_perm("chat.add_botprofile" if creating else "chat.change_botprofile"):
        raise SaveRefused("You do not have permission to " + (
            "add bot profiles." if creating else "change bot profiles."))
    with transaction.atomic():
        if creating:
            profile = BotProfile(name=new_name or source.name, site_name=source.site_name,
                                 fullwidth_punctuation=source.fullwidth_punctuation,
                                 is_default=not new_name)
            changed = list(values)
        else:
            profile = BotProfile.objects.select_for_update().get(pk=source.pk)
            changed = [name for name, value in values.items() if getattr(profile, name) != value]
            if not changed:
                raise SaveRefused(f"“{profile.name}” already has these settings.")
        for name, value in values.items():
            setattr(profile, name, value)
        profile.full_clean()
        profile.save()
        labels = [str(BotProfile._meta.get_field(name).verbose_name) for name in changed]
        LogEntry.objects.log_actions(
            user_id=user.pk, queryset=[profile], action_flag=ADDITION if creating else CHANGE,
            change_message=f"{'Added' if creating else 'Changed'} {', '.join(labels)} from "
                           "the staff playground.",
            single_object=True)
    return profile, creating


# --- Views --------------------------------------------------------------------------------------


def _pane_key(value) -> str:
    if value not in PANES:
        raise Http404("No such pane.")
    return value


def _pane_context(pane: str, profile: BotProfile, *, values: dict | None = None,
                  message: str = "") -> dict:
    if values is None:
        values = {name: getattr(profile, name) for name in PROFILE_FIELDS}
        values |= {"language": "en", "region": "", "timezone": ""}
    return {
        "pane": pane, "title": PANES[pane], "profile": profile, "profiles": profiles(),
        "values": values, "message": message,
        "preview": system_prompt_preview(
            profile=profile, template=values["system_prompt"], language=values["language"],
            region=values["region"], timezone_name=values["timezone"]),
        "languages": [(code, language_name(code)) for code in LANGUAGES],
        "regions": REGIONS, "timezones": TIMEZONES,
    }


@staff_required
@require_GET
def page(request):
    profile = profile_for(profile_id=None)
    return render(request, "agents/playground.html", {
        "section": "playground", "message_max": settings.CHAT["MAX_MESSAGE_CHARS"],
        "panes": [_pane_context(pane, profile) for pane in PANES],
    })


@staff_required
@require_GET
def settings_form(request):
    """A pane's settings filled from a profile (another one chosen, or Reset)."""
    pane = _pane_key(request.GET.get("pane"))
    try:
        profile_id = int(request.GET["profile"]) if request.GET.get("profile") else None
    except ValueError:
        raise Http404("No such bot profile.") from None
    profile = profile_for(profile_id=profile_id)
    if profile is None:
        raise Http404("No such bot profile.")
    values = None
    if request.GET.get("keep_locale"):  # a new profile, the same customer
        form = PromptForm(request.GET)
        form.is_valid()
        values = {name: getattr(profile, name) for name in PROFILE_FIELDS} | {
            name: form.cleaned_data.get(name) or "" for name in ("language", "region", "timezone")}
    return render(request, "agents/_playground_settings.html",
                  {"p": _pane_context(pane, profile, values=values)})


@staff_required
@require_POST
def preview(request):
    """The pane's system prompt with its variables filled in (POST: prompts are long)."""
    form = PromptForm(request.POST)
    if not form.is_valid():
        return render(request, "agents/_playground_preview.html",
                      {"error": form_error_text(form)})
    data = form.cleaned_data
    return render(request, "agents/_playground_preview.html", {
        "preview": system_prompt_preview(
            profile=data["profile"], template=data["system_prompt"], language=data["language"],
            region=data["region"], timezone_name=data["timezone"])})


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
    context = {"pane": pane, "confirming": True,
               "can_change": user.has_perm("chat.change_botprofile"),
               "can_add": user.has_perm("chat.add_botprofile")}
    if not form.is_valid():
        return render(request, "agents/_playground_save.html",
                      {**context, "error": form_error_text(form)})
    data = form.cleaned_data
    source, values = data["profile"], form.profile_values()
    new_name = data["new_name"] if data["target"] == "new" else ""
    context |= {"profile": source, "changes": profile_changes(source, values),
                "target": data["target"] or "update", "new_name": data["new_name"]}
    if not data["confirm"]:
        return render(request, "agents/_playground_save.html", context)
    try:
        profile, created = profile_save(user=user, source=source, values=values,
                                        new_name=new_name)
    except SaveRefused as exc:
        return render(request, "agents/_playground_save.html", {**context, "error": str(exc)})
    except ValidationError as exc:
        return render(request, "agents/_playground_save.html",
                      {**context, "error": " ".join(exc.messages)})
    locale = {name: data[name] for name in ("language", "region", "timezone")}
    response = render(request, "agents/_playground_settings.html", {"p": _pane_context(
        pane, profile, values={**values, **locale},
        message=f"{'Created' if created else 'Saved'} bot profile “{profile.name}”.")})
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
        conversation = await db(own_conversation)(user=user,
                                                  conversation_id=data["conversation"])
        if conversation is None:
            return _refusal(404, "No such playground conversation: start a new session.")
    if await db(asks_for_human)(conversation_id=conversation.pk if conversation else None,
                                text=data["message"]):
        return _refusal(409, HANDOFF_REFUSAL)
    if conversation is not None and not await answering.answer_ended(conversation.pk):
        return _refusal(409, "An answer is still streaming here: wait for it, or press Stop.")
    conversation = await db(playground_open)(
        user=user, conversation=conversation, profile=data["profile"],
        language=data["language"], region=data["region"], timezone_name=data["timezone"])

    async def record(message: Message, created: bool) -> None:
        await db(answer_settings_record)(conversation_id=conversation.pk, question_id=message.pk,
                                         answer_settings=form.answer_settings())

    listener = await AnswerListener(conversation).open()
    try:
        turn = await turns.customer_says(
            conversation=conversation, text=data["message"], client_id=None,
            channel_name=listener.channel_name, options=form.options(), on_stored=record)
    except chat_services.ConversationClosed:
        await listener.close()
        return _refusal(409, "This playground conversation is closed: start a new session.")
    except BaseException:
        await listener.close()
        raise
    return StreamingHttpResponse(
        turn_stream(listener, conversation, turn), content_type="text/event-stream",
        headers={**SSE_HEADERS, CONVERSATION_HEADER: str(conversation.pk)})


@staff_required
@require_GET
def export(request):
    """The session as a JSON download: ?a=…&b=… name the panes' conversations."""
    ids = {pane: agent_selectors.parse_conversation_id(request.GET[pane])
           for pane in PANES if request.GET.get(pane)}
    if not ids or None in ids.values():
        raise Http404("Name the session's conversations.")
    data = session_export(user=request.user, conversation_ids=ids)
    if data is None:
        raise Http404("No such playground conversation.")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    response = JsonResponse(data, json_dumps_params={"ensure_ascii": False, "indent": 2})
    response["Content-Disposition"] = f'attachment; filename="playground-{stamp}.json"'
    return response

