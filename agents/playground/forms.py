"""Input validation of the playground: a pane's settings, a question asked with them, and
saving them as a bot profile. The writes themselves are `agents.playground.services` calls."""

import zoneinfo

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from agents.forms import AgentTextField
from agents.playground.selectors import profile_for
from chat.answering import AnswerOptions
from chat.models import BotProfile
from chat.prompting import SamplingRanges

# The BotProfile fields a pane's settings edit (the rest of a profile is admin's).
PROFILE_FIELDS = ("system_prompt", "temperature", "top_p", "max_tokens", "frequency_penalty")


class PromptForm(forms.Form):
    """What the system prompt is rendered with. `profile` cleans to a BotProfile: the one
    chosen, or without one the live default (possibly the built-in, unsaved one)."""

    profile = forms.IntegerField(required=False, min_value=1)
    # Empty: the profile's own prompt, as AnswerOptions treats it.
    system_prompt = AgentTextField(max_length=16000, required=False)
    language = forms.CharField(
        max_length=35,
        required=False,
        validators=[
            RegexValidator(
                r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", "A language tag such as en or zh-CN."
            )
        ],
    )
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
    """A pane's settings, in the ranges every layer allows (chat.prompting.SamplingRanges):
    what is recorded for an answer is what the worker got."""

    temperature = forms.FloatField(
        min_value=SamplingRanges.temperature.low, max_value=SamplingRanges.temperature.high
    )
    top_p = forms.FloatField(
        min_value=SamplingRanges.top_p.low, max_value=SamplingRanges.top_p.high
    )
    # No upper bound here: the profile's max_tokens is the one that says "at most 320".
    max_tokens = forms.IntegerField(min_value=SamplingRanges.max_tokens.low)
    frequency_penalty = forms.FloatField(
        min_value=SamplingRanges.frequency_penalty.low,
        max_value=SamplingRanges.frequency_penalty.high,
    )

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
        return AnswerOptions(
            max_tokens=data["max_tokens"],
            temperature=data["temperature"],
            top_p=data["top_p"],
            frequency_penalty=data["frequency_penalty"],
            system_prompt=data["system_prompt"] or None,
        )

    def answer_settings(self) -> dict:
        """What one answer was asked with, as the export shows it."""
        data = self.cleaned_data
        profile = data["profile"]
        return {
            "profile": profile.name,
            "profile_id": profile.pk,
            **self.profile_values(),
            "system_prompt_overridden": bool(data["system_prompt"])
            and (data["system_prompt"] != profile.system_prompt),
            "language": data["language"],
            "region": data["region"],
            "timezone": data["timezone"],
        }


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
    return " ".join(
        f"{'' if name == '__all__' else name.replace('_', ' ') + ': '}{error}"
        for name, errors in form.errors.items()
        for error in errors
    )
