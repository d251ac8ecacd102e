"""The kinds of channel a site can connect, and what each needs: its settings (required and
optional), which of them are secret, how they are checked, and what the company must set up
on the other side. `manage.py add_channel` and admin read this registry; a kind plugs in by
adding its `Kind` to KINDS.

A secret setting may be written `${ENV_NAME}` (read from the environment where it is used,
chat/env_secrets.py) or literally (stored, and shown masked from then on). In a URL setting,
the secret is the URL's password.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chat import env_secrets
from chat.models import Inbox
from connectors.sending import Outgoing


@dataclass(frozen=True)
class Kind:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    # Settings whose whole value is secret, and URL settings whose password is.
    secrets: tuple[str, ...] = ()
    secret_urls: tuple[str, ...] = ()
    # Problems with settings (the names are checked here already), as sentences.
    check: Callable[[dict], list[str]] = field(default=lambda settings: [])
    # What the company must configure on its side, as lines; where the kind has a callback
    # URL (the other side calls the desk), it is the last line, alone. `base_url` is the
    # desk's public address.
    describe: Callable[[Inbox, str], list[str]] = field(default=lambda inbox, base_url: [])
    # The id of an outgoing message, chosen before it is sent (so each try sends the same
    # one), from the inbox's settings; "" where the channel gives one when it is sent.
    new_outbound_id: Callable[[dict], str] = field(default=lambda settings: "")
    # Sends one outbox row within the seconds given (run_connectors calls it); returns the
    # channel's id of what was sent; raises connectors.sending.SendFailed, or
    # env_secrets.MissingVariable for a secret the environment lacks.
    send: Callable[[Outgoing, float], Awaitable[str]] | None = None


def _email() -> Kind:
    from connectors.email.kind import EMAIL

    return EMAIL


def _wecom() -> Kind:
    from connectors.wecom.kind import WECOM

    return WECOM


KINDS: dict[str, Kind] = {"email": _email(), "wecom": _wecom()}


def problems(kind: str, settings: dict) -> list[str]:
    """Everything wrong with `settings` for a channel of `kind`, as sentences."""
    spec = KINDS.get(kind)
    if spec is None:
        return [f"unknown kind {kind!r}: one of {', '.join(sorted(KINDS))}"]
    if not isinstance(settings, dict):
        return ["settings must be a JSON object"]
    found = [f"{name}: required" for name in spec.required if not settings.get(name)]
    known = {*spec.required, *spec.optional}
    found += [
        f"{name}: not a setting of {kind} (known: {', '.join(sorted(known))})"
        for name in settings
        if name not in known
    ]
    for name, value in settings.items():
        if not isinstance(value, str):
            found.append(f"{name}: must be text")
        elif (own := env_secrets.names_desk_secret(value)) is not None:
            found.append(f"{name}: ${{{own}}} is the desk's own secret; it is never used here")
    return found or spec.check(settings)


def masked(kind: str, settings: dict) -> dict:
    """The settings as they may be shown: secrets written literally are hidden."""
    spec = KINDS.get(kind)
    if spec is None or not isinstance(settings, dict):
        return {}
    shown = {}
    for name, value in settings.items():
        if not isinstance(value, str):
            shown[name] = value
        elif name in spec.secrets:
            shown[name] = env_secrets.mask(value)
        elif name in spec.secret_urls:
            shown[name] = env_secrets.mask_url(value)
        else:
            shown[name] = value
    return shown


def resolved(inbox: Inbox) -> dict:
    """The inbox's settings with every `${NAME}` read from the environment, for use now;
    raises env_secrets.MissingVariable naming the first unset one. Never log the result."""
    return {
        name: env_secrets.resolve(value) if isinstance(value, str) else value
        for name, value in inbox.settings.items()
    }
