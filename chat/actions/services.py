"""Writes of actions (admin, `import_actions`) and of their calls on conversations.

Every save is checked whole first (`Action.full_clean`: the schema as a schema, the URL
template, headers, triggers, templates), so no action that cannot be called is stored. An
import checks every action of the file before it writes one, and writes all in one
transaction: a file with one mistake imports nothing.

A call that changes something is recorded as `confirm_required` and made only after
`call_confirm` turned it into `confirmed`: a conditional UPDATE, so of two confirmations that
race (two tabs, a double click, a retried request) exactly one wins, in any number of
processes, and only the winner calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from chat import hooks
from chat.actions import schema, selectors
from chat.actions.models import Action, ActionCall
from chat.actions.outcome import Outcome

# What a definition (admin, import file) sets; ids, timestamps and is_sample are the desk's.
ACTION_FIELDS = (
    "name",
    "description",
    "parameters",
    "method",
    "url",
    "headers",
    "timeout_seconds",
    "audience",
    "confirm",
    "confirm_text",
    "result",
    "triggers",
    "enabled",
)
CREATED, UPDATED, UNCHANGED, KEPT = "created", "updated", "unchanged", "kept"
_DETAIL_CHARS = 1000


class InvalidActions(ValueError):
    """Definitions that cannot be saved; each problem names the action and the field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class ActionDefinition:
    """One action as a file gives it: the fields to set, for a site (None: all sites)."""

    label: str  # for messages: the file and the action, e.g. "actions.yaml, order_status"
    site_id: int | None
    fields: dict = field(default_factory=dict)
    is_sample: bool = False  # the shipped sample (import_actions --sample)
    source: str = ""  # the file it came from


# --- actions ---------------------------------------------------------------------------------


def action_save(*, action: Action) -> Action:
    """Check and save a new or changed action (admin, import)."""
    action.full_clean()
    action.save()
    return action


def actions_import(*, definitions: list[ActionDefinition]) -> list[tuple[ActionDefinition, str]]:
    """Create or update each action by its name and site, all or none: (definition,
    "created" | "updated" | "unchanged" | "kept"). InvalidActions lists every problem of
    every definition when one cannot be saved.

    The shipped sample never overwrites an action of the company's own with the same name
    ("kept": left as it is), so `--sample` is safe to run on any desk."""
    problems: list[str] = []
    prepared: list[tuple[ActionDefinition, Action, str]] = []
    seen: dict[tuple[int | None, str], str] = {}
    for definition in definitions:
        name = definition.fields.get("name", "")
        is_sample = definition.is_sample
        key = (definition.site_id, name)
        if key in seen:
            problems.append(f"{definition.label}: name: {name} is already defined by {seen[key]}")
            continue
        seen[key] = definition.label
        existing = selectors.action_by_name(site_id=definition.site_id, name=name) if name else None
        if is_sample and existing is not None and not existing.is_sample:
            prepared.append((definition, existing, KEPT))
            continue
        action = existing or Action(site_id=definition.site_id)
        before = _values(action) if existing else None
        was_sample = existing.is_sample if existing else None
        for name_, value in definition.fields.items():
            setattr(action, name_, value)
        action.is_sample = is_sample
        try:
            action.full_clean()
        except ValidationError as exc:
            problems += [
                f"{definition.label}: {field_}: {message}"
                for field_, messages in exc.message_dict.items()
                for message in messages
            ]
            continue
        if existing is None:
            outcome = CREATED
        elif before == _values(action) and was_sample == is_sample:
            outcome = UNCHANGED
        else:
            outcome = UPDATED
        prepared.append((definition, action, outcome))
    if problems:
        raise InvalidActions(problems)
    with transaction.atomic():
        for _, action, outcome in prepared:
            if outcome in (CREATED, UPDATED):
                action.save()
    return [(definition, outcome) for definition, _, outcome in prepared]


def action_delete(*, action: Action) -> None:
    """Delete an action; its calls stay on their transcripts, under its name."""
    action.delete()


def actions_delete(*, queryset: QuerySet[Action]) -> int:
    _, per_model = queryset.delete()
    return per_model.get(Action._meta.label, 0)


def sample_remove() -> int:
    """Delete the sample actions, and nothing else; returns how many went."""
    return actions_delete(queryset=selectors.sample_actions())


def _values(action: Action) -> dict:
    return {name: getattr(action, name) for name in (*ACTION_FIELDS, "site_id")}


# --- calls -----------------------------------------------------------------------------------


def call_record(
    *,
    conversation_id: object,
    action: Action,
    arguments: object,
    outcome: Outcome | None = None,
    message_id: int | None = None,
    proposed_by: str = ActionCall.ProposedBy.TRIGGER,
) -> ActionCall:
    """Put a call on the conversation's record: with its outcome once made, or (no outcome)
    as waiting for the customer's confirmation. Only the parameters the action declares are
    kept: never headers, never secrets. `proposed_by`: a trigger, or the model."""
    kept, _ = schema.validated(action.parameters, arguments)
    call = ActionCall(
        conversation_id=conversation_id,
        message_id=message_id,
        action=action if action.pk else None,
        action_name=action.name,
        arguments=kept,
        status=ActionCall.Status.CONFIRM_REQUIRED,
        proposed_by=proposed_by,
    )
    if outcome is not None:
        _apply(call, outcome)
    with transaction.atomic():
        call.save()
        if outcome is not None:
            hooks.emit("action.called", conversation_id=conversation_id, call=call)
    return call


def call_confirm(*, call_id: int, conversation_id: object) -> bool:
    """The customer confirmed: True for exactly one caller, the one that should now call.
    False when the call was already confirmed or cancelled, or is another conversation's."""
    return _move(call_id, conversation_id, to=ActionCall.Status.CONFIRMED)


def call_cancel(*, call_id: int, conversation_id: object) -> bool:
    """The customer said no: True when this turned a waiting call into a cancelled one."""
    return _move(call_id, conversation_id, to=ActionCall.Status.CANCELLED)


def call_finish(*, call_id: int, outcome: Outcome) -> bool:
    """Record the outcome of a confirmed call; False when it was not waiting for one."""
    call = ActionCall(pk=call_id)
    _apply(call, outcome)
    with transaction.atomic():
        updated = ActionCall.objects.filter(pk=call_id, status=ActionCall.Status.CONFIRMED).update(
            status=call.status,
            reason=call.reason,
            detail=call.detail,
            http_status=call.http_status,
            latency_ms=call.latency_ms,
            fields=call.fields,
            text=call.text,
            updated_at=timezone.now(),
        )
        if updated:
            call = ActionCall.objects.get(pk=call_id)
            hooks.emit("action.called", conversation_id=call.conversation_id, call=call)
    return updated == 1


def call_attach_message(*, call_id: int, message_id: int) -> None:
    """The bot answer the call belongs to, once it is stored."""
    ActionCall.objects.filter(pk=call_id).update(message_id=message_id, updated_at=timezone.now())


def _move(call_id: int, conversation_id: object, *, to: str) -> bool:
    # One UPDATE with the expected state in its WHERE: the database lets one of two racing
    # requests change the row; the other's UPDATE then matches nothing.
    updated = ActionCall.objects.filter(
        pk=call_id,
        conversation_id=conversation_id,
        status=ActionCall.Status.CONFIRM_REQUIRED,
    ).update(status=to, updated_at=timezone.now())
    return updated == 1


def _apply(call: ActionCall, outcome: Outcome) -> None:
    call.status = outcome.status
    call.reason = outcome.reason[:40]
    call.detail = outcome.detail[:_DETAIL_CHARS]
    call.http_status = outcome.http_status
    call.latency_ms = outcome.latency_ms
    call.fields = outcome.fields
    call.text = outcome.text
