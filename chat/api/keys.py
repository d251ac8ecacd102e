"""API keys: writes (create, update, revoke, touch) and reads (the key behind a secret).

A key's secret is shown once, when it is made, and stored only as its SHA-256: a copy of the
database does not hand out working keys. Secrets are long random strings, so an unsalted fast
hash is enough (nothing to brute-force, unlike a password), and it lets a request find its key
with one indexed lookup.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from chat.models import ApiKey, ApiScope, Site
from chat.selectors import hash_token

SECRET_PREFIX = "csk_"
# Characters of the secret kept in clear (`ApiKey.prefix`), to tell keys apart in lists and
# logs: "csk_" and 8 random characters, far too few to help anyone guess the rest.
PREFIX_CHARS = 12
# Longest secret worth hashing; ours are 47 characters. Anything longer is not one of ours.
MAX_SECRET_CHARS = 200
# `last_used_at` is for people ("is this key still in use?"): minute precision is plenty, and
# a write per request would put every API call behind a database write.
TOUCH_EVERY = timedelta(minutes=1)


def generate_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def create_api_key(
    *,
    name: str,
    site: Site | None = None,
    scopes: list[str],
    requests_per_minute: int | None = None,
    tokens_per_day: int | None = None,
) -> tuple[ApiKey, str]:
    """Make a key; returns it with its secret, which is not stored and cannot be shown again.
    Limits left as None take settings.API's defaults. Raises ValueError for an unknown scope
    or a negative limit."""
    defaults = settings.API
    secret = generate_secret()
    key = ApiKey.objects.create(
        name=_clean_name(name),
        prefix=secret[:PREFIX_CHARS],
        secret_hash=hash_token(secret),
        site=site,
        scopes=clean_scopes(scopes),
        requests_per_minute=_clean_limit(
            "requests_per_minute",
            defaults["DEFAULT_REQUESTS_PER_MINUTE"]
            if requests_per_minute is None
            else requests_per_minute,
        ),
        tokens_per_day=_clean_limit(
            "tokens_per_day",
            defaults["DEFAULT_TOKENS_PER_DAY"] if tokens_per_day is None else tokens_per_day,
        ),
    )
    return key, secret


def update_api_key(
    *,
    key: ApiKey,
    name: str,
    site: Site | None,
    scopes: list[str],
    requests_per_minute: int,
    tokens_per_day: int,
) -> ApiKey:
    """Change what a key may do (admin). The secret stays the same; make a new key to change it."""
    key.name = _clean_name(name)
    key.site = site
    key.scopes = clean_scopes(scopes)
    key.requests_per_minute = _clean_limit("requests_per_minute", requests_per_minute)
    key.tokens_per_day = _clean_limit("tokens_per_day", tokens_per_day)
    key.save(update_fields=["name", "site", "scopes", "requests_per_minute", "tokens_per_day"])
    return key


def revoke_api_key(key: ApiKey) -> bool:
    """Stop a key from working, for good. False when it was already revoked (the first
    revocation time is kept, for the record)."""
    now = timezone.now()
    revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    if revoked:
        key.revoked_at = now
    return bool(revoked)


def touch_last_used(key: ApiKey) -> bool:
    """Note that the key was just used, at most once a minute per key; True when written.

    `key` is fresh from `key_for_secret` on every request, so its `last_used_at` tells without
    a query whether a write is due. The update is conditional too, so many processes using
    one key at once still write it about once a minute, not once each."""
    if not touch_due(key):
        return False
    now = timezone.now()
    due = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOUCH_EVERY)
    written = ApiKey.objects.filter(due, pk=key.pk).update(last_used_at=now)
    if written:
        key.last_used_at = now
    return bool(written)


def touch_due(key: ApiKey) -> bool:
    """Whether `touch_last_used` would write: lets an async caller skip the thread hop."""
    return key.last_used_at is None or timezone.now() - key.last_used_at >= TOUCH_EVERY


# --- reads ----------------------------------------------------------------------------------


def key_for_secret(secret: str) -> ApiKey | None:
    """The active key with this secret (its site loaded), or None for an unknown or revoked
    one, or one of a deactivated site, alike: callers must not tell them apart to the client."""
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return None
    return (
        ApiKey.objects.select_related("site")
        .filter(secret_hash=hash_token(secret), revoked_at__isnull=True)
        .exclude(site__is_active=False)
        .first()
    )


def clean_scopes(scopes: list[str]) -> list[str]:
    """`scopes` checked against ApiScope, without duplicates, in ApiScope's order."""
    wanted = [scope.strip() for scope in scopes if scope.strip()]
    unknown = sorted(set(wanted) - set(ApiScope.values))
    if unknown:
        raise ValueError(
            f"Unknown scope{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(ApiScope.values)}."
        )
    if not wanted:
        raise ValueError(f"Give the key at least one scope: {', '.join(ApiScope.values)}.")
    return [scope for scope in ApiScope.values if scope in wanted]


def _clean_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValueError("Give the key a name, e.g. the company or back end that uses it.")
    max_length = ApiKey._meta.get_field("name").max_length
    if len(name) > max_length:
        raise ValueError(f"A key's name has at most {max_length} characters.")
    return name


def _clean_limit(name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{name} must be 0 (no limit) or more, not {value}.")
    return value
