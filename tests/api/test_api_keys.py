"""API keys: only a hash is stored, the command and admin hand out a secret once, and
ApiKeyAuth answers a missing, malformed, wrong, revoked or under-scoped key with the API's own
errors. Authentication is tested through a tiny NinjaAPI of its own (this module is its
URLconf), on Django's async test client, so it runs as the real API's operations will."""

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command
from django.test import AsyncClient
from django.urls import path
from django.utils import timezone
from ninja import NinjaAPI

from chat import limits
from chat.api import keys
from chat.api.auth import ApiKeyAuth
from chat.api.errors import ApiError
from chat.models import ApiKey, Site

pytestmark = pytest.mark.django_db(transaction=True)
# Requests to the tiny API below; the admin tests keep the project's URLconf.
on_test_api = pytest.mark.urls(__name__)

# --- the tiny API under test ----------------------------------------------------------------

api = NinjaAPI(urls_namespace="test_api_keys", docs_url=None)


@api.exception_handler(ApiError)
def render_api_error(request, exc: ApiError):
    error = {"code": exc.code, "message": exc.message}
    if exc.field:
        error["field"] = exc.field
    response = api.create_response(request, {"error": error}, status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


@api.get("/whoami", auth=ApiKeyAuth("chat"))
async def whoami(request):
    return {"name": request.auth.name, "site": request.auth.site.key if request.auth.site else None}


@api.get("/transcripts", auth=ApiKeyAuth("transcripts:read"))
async def transcripts(request):
    return {"ok": True}


urlpatterns = [path("t/", api.urls)]

HOW = "Send your API key as 'Authorization: Bearer <key>'"


@pytest.fixture(autouse=True)
async def close_limits():
    yield
    await limits.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def get(url: str, headers: dict | None = None):
    return await AsyncClient().get(url, headers=headers or {})


make_key = database_sync_to_async(keys.create_api_key)


# --- keys: services and selectors -----------------------------------------------------------


def test_only_a_hash_of_the_secret_is_stored(settings):
    settings.API = {**settings.API, "DEFAULT_REQUESTS_PER_MINUTE": 7, "DEFAULT_TOKENS_PER_DAY": 99}
    key, secret = keys.create_api_key(name="Shop backend", scopes=["openai", "chat", "chat"])

    assert secret.startswith("csk_") and len(secret) >= 40
    stored = ApiKey.objects.filter(pk=key.pk).values().get()
    assert secret not in [str(value) for value in stored.values()]
    assert stored["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert stored["prefix"] == secret[:12]
    assert stored["scopes"] == ["chat", "openai"]  # ApiScope's order, once each
    assert (stored["requests_per_minute"], stored["tokens_per_day"]) == (7, 99)
    assert keys.key_for_secret(secret) == key
    assert keys.key_for_secret(secret[:-1]) is None
    assert keys.key_for_secret("") is None
    # Two keys never share a secret.
    assert keys.create_api_key(name="other", scopes=["chat"])[1] != secret


def test_explicit_limits_win_over_defaults_and_zero_means_none():
    key, _ = keys.create_api_key(
        name="batch", scopes=["openai"], requests_per_minute=0, tokens_per_day=5
    )
    assert (key.requests_per_minute, key.tokens_per_day) == (0, 5)
    with pytest.raises(ValueError, match="requests_per_minute must be 0"):
        keys.create_api_key(name="bad", scopes=["chat"], requests_per_minute=-1)


@pytest.mark.parametrize(
    "scopes, message",
    [
        (
            ["chat", "admin"],
            r"Unknown scope 'admin'; choose from chat, openai, transcripts:read, customers\.",
        ),
        ([], "at least one scope"),
        ([" "], "at least one scope"),
    ],
)
def test_a_key_needs_known_scopes(scopes, message):
    with pytest.raises(ValueError, match=message):
        keys.create_api_key(name="x", scopes=scopes)
    assert not ApiKey.objects.exists()


def test_a_revoked_key_is_not_found_and_keeps_its_revocation_time():
    key, secret = keys.create_api_key(name="x", scopes=["chat"])
    assert keys.revoke_api_key(key) is True
    first = ApiKey.objects.get(pk=key.pk).revoked_at
    assert first is not None
    assert keys.key_for_secret(secret) is None
    assert keys.revoke_api_key(key) is False
    assert ApiKey.objects.get(pk=key.pk).revoked_at == first


def test_a_key_of_a_deactivated_site_is_not_found_until_the_site_is_back():
    site = Site.objects.create(name="Shop", allowed_origins="https://shop.example")
    key, secret = keys.create_api_key(name="shop", scopes=["chat"], site=site)
    _, unbound = keys.create_api_key(name="desk", scopes=["chat"])
    Site.objects.filter(pk=site.pk).update(is_active=False)
    assert keys.key_for_secret(secret) is None
    assert keys.key_for_secret(unbound) is not None  # a key of no site is no site's to stop
    Site.objects.filter(pk=site.pk).update(is_active=True)
    assert keys.key_for_secret(secret) == key


def test_last_used_is_written_at_most_once_a_minute():
    key, secret = keys.create_api_key(name="x", scopes=["chat"])
    assert keys.touch_last_used(key) is True
    written = ApiKey.objects.get(pk=key.pk).last_used_at
    assert written is not None
    assert keys.touch_last_used(key) is False
    # Another process holding the key from before the write does not write it again.
    stale = keys.key_for_secret(secret)
    stale.last_used_at = None
    assert keys.touch_last_used(stale) is False
    assert ApiKey.objects.get(pk=key.pk).last_used_at == written
    # A minute later it is due again.
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=written - timedelta(seconds=61))
    again = keys.key_for_secret(secret)
    assert keys.touch_last_used(again) is True
    assert ApiKey.objects.get(pk=key.pk).last_used_at > written


# --- the command ----------------------------------------------------------------------------


def run_command(*args: str) -> list[str]:
    out = StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().splitlines()


@on_test_api
async def test_the_command_prints_a_working_key_alone_on_the_last_line():
    site = await Site.objects.acreate(name="Shop", allowed_origins="https://shop.example.com")
    lines = await database_sync_to_async(run_command)(
        *("--name", "Shop backend", "--site", site.key, "--scopes", "chat"),
        *("--rpm", "5", "--tokens-per-day", "0"),
    )
    secret = lines[-1]
    assert secret.startswith("csk_") and " " not in secret
    assert secret not in "\n".join(lines[:-1])
    assert any("5 requests a minute" in line for line in lines)
    key = await ApiKey.objects.select_related("site").aget(name="Shop backend")
    got = (key.site, key.scopes, key.requests_per_minute, key.tokens_per_day)
    assert got == (site, ["chat"], 5, 0)
    assert key.prefix == secret[:12]

    response = await get("/t/whoami", bearer(secret))
    assert response.status_code == 200, response.content
    assert response.json() == {"name": "Shop backend", "site": site.key}


def test_the_command_defaults_to_chat_and_openai(settings):
    settings.API = {**settings.API, "DEFAULT_REQUESTS_PER_MINUTE": 11}
    secret = run_command("--name", "default")[-1]
    key = keys.key_for_secret(secret)
    assert key.scopes == ["chat", "openai"]
    assert key.requests_per_minute == 11
    assert key.site is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--site", "nope"], r"No site with key 'nope'\. Use a key from admin \(Sites\) such as "),
        (["--scopes", "chat,admin"], r"Unknown scope 'admin'; choose from "),
        (["--rpm", "-3"], r"requests_per_minute must be 0 \(no limit\) or more"),
    ],
)
def test_the_command_says_what_is_wrong(args, message):
    Site.objects.create(name="Shop", key="shop-key", allowed_origins="https://shop.example.com")
    with pytest.raises(CommandError, match=message):
        run_command("--name", "x", *args)
    assert not ApiKey.objects.exists()


# --- authentication -------------------------------------------------------------------------


@on_test_api
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Token csk_abc"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer csk_a csk_b"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "empty", "other-scheme", "no-token", "two-tokens", "basic"],
)
async def test_a_missing_or_malformed_key_is_401(headers):
    response = await get("/t/whoami", headers)
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"error"}  # the API's shape, not ninja's {"detail": ...}
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"].startswith(HOW)
    assert response["WWW-Authenticate"].startswith("Bearer")


@on_test_api
async def test_a_wrong_or_revoked_key_is_401_and_they_look_the_same():
    key, secret = await make_key(name="x", scopes=["chat"])
    wrong = await get("/t/whoami", bearer(secret + "x"))
    await database_sync_to_async(keys.revoke_api_key)(key)
    revoked = await get("/t/whoami", bearer(secret))

    assert wrong.status_code == revoked.status_code == 401
    assert wrong.json() == revoked.json()
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert HOW in wrong.json()["error"]["message"]


@on_test_api
async def test_a_good_key_is_the_request_auth_and_marks_the_key_used():
    key, secret = await make_key(name="Shop backend", scopes=["chat"])
    assert key.last_used_at is None
    response = await get("/t/whoami", {"Authorization": f"bearer   {secret}"})
    assert response.status_code == 200, response.content
    assert response.json() == {"name": "Shop backend", "site": None}
    used = (await ApiKey.objects.aget(pk=key.pk)).last_used_at
    assert used is not None and timezone.now() - used < timedelta(seconds=10)


@on_test_api
async def test_a_key_without_the_scope_is_403_naming_it():
    _, secret = await make_key(name="x", scopes=["chat", "openai"])
    response = await get("/t/transcripts", bearer(secret))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert "'transcripts:read' scope" in error["message"]
    # The same key passes where its scope is enough.
    assert (await get("/t/whoami", bearer(secret))).status_code == 200


@on_test_api
def test_the_schema_lists_a_bearer_scheme():
    schema = api.get_openapi_schema()
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"]["scheme"] == "bearer"
    assert schema["paths"]["/t/whoami"]["get"]["security"] == [{"ApiKeyAuth": []}]


def test_an_unknown_scope_is_a_programming_error():
    with pytest.raises(ValueError, match="Unknown scope 'chats'"):
        ApiKeyAuth("chats")


# --- admin ----------------------------------------------------------------------------------

ADD = "/admin/chat/apikey/add/"


def test_admin_makes_a_key_and_shows_its_secret_once(admin_client):
    site = Site.objects.create(name="Shop", allowed_origins="https://shop.example.com")
    form = admin_client.get(ADD)
    assert form.status_code == 200
    page = form.content.decode()
    assert 'type="checkbox" name="scopes" value="transcripts:read"' in page
    assert "secret_hash" not in page

    response = admin_client.post(
        ADD,
        {
            "name": "Shop backend",
            "site": site.pk,
            "scopes": ["chat", "transcripts:read"],
            "requests_per_minute": 30,
            "tokens_per_day": 1000,
        },
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "copy it now" in str(m)]
    assert len(shown) == 1
    secret = next(word for word in shown[0].split() if word.startswith("csk_"))
    key = keys.key_for_secret(secret)
    assert key is not None
    got = (key.name, key.site, key.scopes, key.requests_per_minute, key.tokens_per_day)
    assert got == ("Shop backend", site, ["chat", "transcripts:read"], 30, 1000)
    # Shown once: neither the change page nor the list has it (or its hash).
    for url in (f"/admin/chat/apikey/{key.pk}/change/", "/admin/chat/apikey/"):
        page = admin_client.get(url).content.decode()
        assert secret not in page and key.secret_hash not in page
        assert key.prefix in page


def test_admin_refuses_a_key_without_scopes(admin_client):
    response = admin_client.post(
        ADD, {"name": "x", "scopes": [], "requests_per_minute": 1, "tokens_per_day": 1}
    )
    assert response.status_code == 200  # the form again, with its error
    assert response.context["adminform"].form.errors["scopes"]
    assert not ApiKey.objects.exists()


def test_admin_edits_limits_without_changing_the_secret(admin_client):
    key, secret = keys.create_api_key(name="x", scopes=["chat"])
    response = admin_client.post(
        f"/admin/chat/apikey/{key.pk}/change/",
        {"name": "renamed", "scopes": ["openai"], "requests_per_minute": 0, "tokens_per_day": 5},
    )
    assert response.status_code == 302
    key = keys.key_for_secret(secret)
    got = (key.name, key.scopes, key.requests_per_minute, key.tokens_per_day)
    assert got == ("renamed", ["openai"], 0, 5)


def test_admin_revokes_selected_keys(admin_client):
    first, first_secret = keys.create_api_key(name="a", scopes=["chat"])
    second, _ = keys.create_api_key(name="b", scopes=["chat"])
    kept, kept_secret = keys.create_api_key(name="c", scopes=["chat"])
    response = admin_client.post(
        "/admin/chat/apikey/",
        {"action": "revoke", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    assert "Revoked 2 API keys." in [str(m) for m in response.context["messages"]]
    assert keys.key_for_secret(first_secret) is None
    assert ApiKey.objects.filter(revoked_at__isnull=False).count() == 2
    assert keys.key_for_secret(kept_secret) == kept
