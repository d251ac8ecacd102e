"""Reads of actions and their calls."""

from django.db.models import F, Q, QuerySet

from chat.actions.models import Action, ActionCall


def actions_for(*, site_id: int | None, verified: bool) -> list[Action]:
    """The actions a conversation of this site may use, by name: the site's own and those for
    all sites, the site's own winning over one of the same name for all (also when it is
    turned off: that is how a site opts out of a shared action). Public ones only unless the
    customer is verified."""
    where = Q(site__isnull=True) | Q(site_id=site_id) if site_id else Q(site__isnull=True)
    chosen: dict[str, Action] = {}
    # Shared ones first, so a site's own of the same name replaces it.
    for action in Action.objects.filter(where).order_by(F("site_id").asc(nulls_first=True)):
        chosen[action.name] = action
    return sorted(
        (
            action
            for action in chosen.values()
            if action.enabled and (verified or action.audience == Action.Audience.PUBLIC)
        ),
        key=lambda action: action.name,
    )


def action_for(*, site_id: int | None, name: str, verified: bool) -> Action | None:
    """The action a conversation may use under `name` (what the model asked for), or None."""
    return next(
        (a for a in actions_for(site_id=site_id, verified=verified) if a.name == name), None
    )


def action_by_name(*, site_id: int | None, name: str) -> Action | None:
    """The action stored under this name for exactly this site (None: the one for all sites)."""
    return Action.objects.filter(site_id=site_id, name=name).first()


def sample_actions() -> QuerySet[Action]:
    return Action.objects.filter(is_sample=True)


def action_call(*, call_id: int, conversation_id: object) -> ActionCall | None:
    """A call of this conversation (None for another conversation's: ids are not secrets)."""
    return (
        ActionCall.objects.select_related("action")
        .filter(pk=call_id, conversation_id=conversation_id)
        .first()
    )


def conversation_calls(*, conversation_id: object) -> list[ActionCall]:
    return list(ActionCall.objects.filter(conversation_id=conversation_id).order_by("id"))
