"""Input validation of the console's forms; the writes themselves are `agents.services` calls."""

from django import forms

from agents import selectors
from agents.models import Ticket
from chat.text import TextError, clean_text


class AgentTextField(forms.CharField):
    """Text staff write, checked like a customer's (chat.text.clean_text): no control
    characters, something visible, and stored with `\n` line endings (browsers submit a
    textarea's line breaks as CRLF)."""

    def __init__(self, *, single_line: bool = False, **kwargs):
        super().__init__(strip=True, **kwargs)
        self.single_line = single_line

    def clean(self, value):
        value = super().clean(value)
        if value in self.empty_values:
            return value
        try:
            return clean_text(
                value, field="text", max_chars=self.max_length, single_line=self.single_line
            )
        except TextError as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from None


class ReplyForm(forms.Form):
    text = AgentTextField(max_length=8000)


class NoteForm(forms.Form):
    text = AgentTextField(max_length=8000)


class TicketCreateForm(forms.Form):
    subject = AgentTextField(max_length=200, single_line=True)
    priority = forms.ChoiceField(choices=Ticket.Priority.choices, initial=Ticket.Priority.NORMAL)


class TicketUpdateForm(forms.Form):
    """Each field is optional: only what is sent changes. assignee: a staff user's id, or
    "none" to unassign."""

    status = forms.ChoiceField(choices=Ticket.Status.choices, required=False)
    priority = forms.ChoiceField(choices=Ticket.Priority.choices, required=False)
    assignee = forms.CharField(required=False)

    def clean_assignee(self):
        value = self.cleaned_data["assignee"].strip()
        if value in ("", "none"):
            return value
        user = selectors.staff_user(user_id=value)
        if user is None:
            raise forms.ValidationError("Choose a staff member.")
        return user


class TicketFilterForm(forms.Form):
    status = forms.ChoiceField(
        choices=[("unsolved", "Open or pending"), ("", "Any status"), *Ticket.Status.choices],
        required=False,
    )
    priority = forms.ChoiceField(
        choices=[("", "Any priority"), *Ticket.Priority.choices], required=False
    )
    assignee = forms.ChoiceField(
        choices=[("", "Anyone"), ("me", "Me"), ("unassigned", "Unassigned")], required=False
    )


class CannedReplyForm(forms.Form):
    shortcut = forms.SlugField(max_length=40, help_text="Typed as /shortcut in the reply box")
    title = AgentTextField(max_length=100, single_line=True)
    text = AgentTextField(
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Variables: {customer_name}, {agent_name}, {site_name}",
    )

    def __init__(self, *args, reply_id: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reply_id = reply_id

    def clean_shortcut(self):
        shortcut = self.cleaned_data["shortcut"].lower()
        if selectors.canned_shortcut_taken(shortcut=shortcut, exclude_id=self.reply_id):
            raise forms.ValidationError(f"/{shortcut} is already taken.")
        return shortcut
