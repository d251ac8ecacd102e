"""A site's identity secret: made by `manage.py site_identity_secret` or admin's action, shown
once, then only whether it is set and since when; a new one replaces the old at once."""

import logging
import re
from io import StringIO

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.urls import reverse

from chat import customers
from chat.customers import CustomerTokenError
from chat.models import Site
from tests.customers.helpers import make_site, sign

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/chat/site/"


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command("site_identity_secret", *args, stdout=out)
    return out.getvalue().splitlines()


def test_the_command_prints_a_new_secret_alone_on_the_last_line(caplog):
    site = make_site(secret=False)
    with caplog.at_level(logging.DEBUG):
        lines = run(site.key)
    secret = lines[-1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", secret)  # 32 random bytes at least, urlsafe
    assert secret not in "\n".join(lines[:-1]) and secret not in caplog.text
    site.refresh_from_db()
    assert site.identity_secret == secret and site.identity_secret_created_at is not None
    assert customers.verify_token(sign(secret, "c-1"), site=site).id == "c-1"


def test_a_new_secret_replaces_the_old_one_at_once():
    site = make_site(secret=False)
    old = run(site.key)[-1]
    token = sign(old, "c-1")
    lines = run(site.key)
    new = lines[-1]
    assert new != old and any("previous secret" in line for line in lines)
    site.refresh_from_db()
    with pytest.raises(CustomerTokenError) as refused:
        customers.verify_token(token, site=site)
    assert refused.value.code == CustomerTokenError.INVALID
    assert customers.verify_token(sign(new, "c-1"), site=site).id == "c-1"


def test_an_unknown_site_key_is_a_clear_error():
    make_site(name="Shop")
    with pytest.raises(CommandError) as error:
        run("site_nope")
    assert "No site with key 'site_nope'" in str(error.value)
    assert "such as site_" in str(error.value)
    assert not Site.objects.exclude(identity_secret="").filter(name="nope").exists()


# --- admin ----------------------------------------------------------------------------------


def test_admin_shows_whether_a_secret_is_set_but_never_the_secret(admin_client):
    unset = make_site(name="Plain", secret=False)
    page = admin_client.get(reverse("admin:chat_site_change", args=[unset.pk])).content.decode()
    assert "Not set" in page
    site = make_site(name="Shop")
    page = admin_client.get(reverse("admin:chat_site_change", args=[site.pk])).content.decode()
    assert "Set (made " in page and site.identity_secret not in page
    assert 'name="identity_secret"' not in page  # no form field for it
    listing = admin_client.get(CHANGELIST).content.decode()
    assert site.identity_secret not in listing


def test_saving_a_site_in_admin_keeps_its_secret(admin_client):
    site = make_site(name="Shop")
    secret = site.identity_secret
    response = admin_client.post(
        reverse("admin:chat_site_change", args=[site.pk]),
        {
            "key": site.key,
            "name": "Shop renamed",
            "allowed_origins": site.allowed_origins,
            "greeting": site.greeting,
            "accent_color": site.accent_color,
            "language": site.language,
            "business_hours": "{}",
            "is_active": "on",
            # A hand-made field of that name is ignored: the secret is no form field.
            "identity_secret": "chosen-by-hand",
        },
    )
    assert response.status_code == 302, response.content
    site.refresh_from_db()
    assert (site.name, site.identity_secret) == ("Shop renamed", secret)


def test_the_admin_action_shows_a_new_secret_once_and_logs_no_secret(admin_client):
    site = make_site(name="Shop", secret=False)
    response = admin_client.post(
        CHANGELIST,
        {"action": "make_identity_secret", "_selected_action": [site.pk]},
        follow=True,
    )
    assert response.status_code == 200
    site.refresh_from_db()
    secret = site.identity_secret
    assert secret
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(secret in text and "not shown again" in text for text in shown)
    entry = LogEntry.objects.get(object_id=str(site.pk))
    assert entry.action_flag == CHANGE and "identity secret" in entry.get_change_message()
    assert secret not in entry.change_message
    # Afterwards: only that it is set.
    page = admin_client.get(reverse("admin:chat_site_change", args=[site.pk])).content.decode()
    assert secret not in page and "Set (made " in page
