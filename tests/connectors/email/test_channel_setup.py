"""Connecting an e-mail channel: `manage.py add_channel` checks the settings, creates the
inbox and prints what to configure, with literal secrets masked; admin lists and edits inboxes
without ever showing a literal secret again; the console shows each conversation's channel
(an icon screen readers read by name) and filters the list by it."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from chat import env_secrets
from chat import services as chat_services
from chat.models import Conversation, Inbox, Message
from connectors import kinds
from tests.console.helpers import client_for, make_user

pytestmark = pytest.mark.django_db

IMAP = "imaps://help%40shop.test:imap-Secret-1@imap.shop.test/INBOX"
SMTP = "smtp+starttls://help%40shop.test:${HELP_SMTP_PASS}@smtp.shop.test"


def add_channel(site, *settings, **options) -> str:
    out = io.StringIO()
    args = ["email", "--site", site.key]
    for item in settings:
        args += ["--set", item]
    call_command("add_channel", *args, stdout=out, **options)
    return out.getvalue()


def test_add_channel_creates_the_inbox_and_masks_a_literal_secret(site):
    output = add_channel(site, "address=help@shop.test", f"imap_url={IMAP}", f"smtp_url={SMTP}")
    inbox = Inbox.objects.get()
    assert (inbox.kind, inbox.site, inbox.bot_mode, inbox.enabled) == (
        "email",
        site,
        "answer",
        True,
    )
    assert inbox.settings["imap_url"] == IMAP  # stored as given: it is needed to log in
    assert "imap-Secret-1" not in output
    assert env_secrets.MASK in output and "${HELP_SMTP_PASS}" in output  # a name is no secret
    assert output.strip().splitlines()[-1].endswith("help@shop.test")  # the address, last


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (("address=nope", f"imap_url={IMAP}", f"smtp_url={SMTP}"), "address: not an e-mail"),
        (("address=h@shop.test", "imap_url=http://x", f"smtp_url={SMTP}"), "imap_url: the scheme"),
        (
            ("address=h@shop.test", "imap_url=imaps://host/INBOX", f"smtp_url={SMTP}"),
            "user and password",
        ),
        (("address=h@shop.test", f"imap_url={IMAP}"), "smtp_url: required"),
        (
            ("address=h@shop.test", f"imap_url={IMAP}", f"smtp_url={SMTP}", "colour=red"),
            "colour: not a setting",
        ),
        (
            ("address=h@shop.test", "imap_url=imaps://u:${SECRET_KEY}@h/INBOX", f"smtp_url={SMTP}"),
            "the desk's own secret",
        ),
    ],
)
def test_add_channel_refuses_wrong_settings_and_creates_nothing(site, settings, problem):
    with pytest.raises(CommandError, match=problem):
        add_channel(site, *settings)
    assert not Inbox.objects.exists()


def test_a_secret_named_from_the_environment_is_read_where_it_is_used(site, monkeypatch):
    inbox = Inbox.objects.create(
        site=site, kind="email", name="m", settings={"address": "h@shop.test", "smtp_url": SMTP}
    )
    with pytest.raises(env_secrets.MissingVariable, match="HELP_SMTP_PASS"):
        kinds.resolved(inbox)
    monkeypatch.setenv("HELP_SMTP_PASS", "from-env")
    assert kinds.resolved(inbox)["smtp_url"].endswith(":from-env@smtp.shop.test")
    assert inbox.settings["smtp_url"] == SMTP  # never stored


def test_admin_lists_and_edits_an_inbox_without_showing_its_secret(site, admin_client):
    inbox = Inbox.objects.create(
        site=site,
        kind="email",
        name="Help mail",
        settings={"address": "help@shop.test", "imap_url": IMAP, "smtp_url": SMTP},
    )
    listing = admin_client.get("/admin/chat/inbox/").content.decode()
    assert "Help mail" in listing and "imap-Secret-1" not in listing
    form = admin_client.get(f"/admin/chat/inbox/{inbox.pk}/change/")
    assert "imap-Secret-1" not in form.content.decode()
    shown = form.context["adminform"].form.initial["settings"]
    # Saved back as shown (masked), only the address changed: the secret is kept.
    response = admin_client.post(
        f"/admin/chat/inbox/{inbox.pk}/change/",
        {
            "site": site.pk,
            "kind": "email",
            "name": "Help mail",
            "settings": json.dumps({**shown, "address": "care@shop.test"}),
            "bot_mode": "silent",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    inbox.refresh_from_db()
    assert inbox.settings == {"address": "care@shop.test", "imap_url": IMAP, "smtp_url": SMTP}
    assert inbox.bot_mode == "silent"


def test_the_console_shows_the_channel_and_filters_by_it(site, django_user_model):
    ann = make_user(django_user_model, "ann")
    inbox = Inbox.objects.create(site=site, kind="email", name="Help mail", settings={})
    by_mail, _ = chat_services.conversation_start(
        site=site, channel="email", inbox=inbox, contact="mia@customer.test"
    )
    Message.objects.create(conversation=by_mail, role="customer", text="<b>by mail</b>")
    on_widget, _ = chat_services.conversation_start(site=site)
    Message.objects.create(conversation=on_widget, role="customer", text="on the widget")
    client = client_for(ann)

    def listed(**params):
        groups = client.get("/console/inbox/", params).context["inbox"].groups
        return {str(row.pk) for group in groups for row in group.rows}

    assert listed() == {str(by_mail.pk), str(on_widget.pk)}
    assert listed(channel="email") == {str(by_mail.pk)}
    assert listed(channel="widget") == {str(on_widget.pk)}
    assert listed(channel="no-such") == {str(by_mail.pk), str(on_widget.pk)}

    page = client.get("/console/").content.decode()
    assert 'role="img" aria-label="E-mail"' in page  # read out by name
    assert 'aria-label="Web chat"' in page
    assert '<option value="email">E-mail</option>' in page
    assert "&lt;b&gt;by mail&lt;/b&gt;" in page and "<b>by mail</b>" not in page
    pane = client.get(f"/console/c/{by_mail.pk}/").content.decode()
    assert 'aria-label="E-mail"' in pane and "Help mail" in pane
    assert Conversation.objects.get(pk=by_mail.pk).channel == "email"
