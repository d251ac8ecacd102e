"""Connecting a WeCom customer-service account: `manage.py add_channel wecom` checks the
settings (nothing is created when one is wrong), masks the literal secrets and prints what to
configure in WeCom's admin, the callback URL alone on the last line."""

import io

import pytest
from django.core.management import CommandError, call_command

from chat.models import Inbox
from connectors import kinds

from .conftest import DESK_AES_KEY

pytestmark = pytest.mark.django_db

GOOD = [
    "corp_id=ww0123456789abcdef",
    "secret=Corp-Secret-Literal-1",
    "token=${WECOM_CALLBACK_TOKEN}",
    f"encoding_aes_key={DESK_AES_KEY}",
    "open_kfid=wkAbCdEf0123",
]


def add_channel(site, *values: str) -> str:
    out = io.StringIO()
    args = ["wecom", "--site", site.key, "--public-url", "https://desk.shop.example/"]
    for value in values:
        args += ["--set", value]
    call_command("add_channel", *args, stdout=out)
    return out.getvalue()


def test_add_channel_creates_the_inbox_and_ends_with_the_callback_url(desk_site):
    output = add_channel(desk_site, *GOOD)
    inbox = Inbox.objects.get()
    assert (inbox.kind, inbox.site, inbox.bot_mode) == ("wecom", desk_site, "answer")
    lines = output.strip().splitlines()
    assert lines[-1] == f"https://desk.shop.example/connectors/wecom/{inbox.pk}/callback"
    assert "Corp-Secret-Literal-1" not in output and DESK_AES_KEY not in output
    assert "  token = ${WECOM_CALLBACK_TOKEN}" in lines  # named, not secret itself
    assert "接收消息服务器" in output and "企业可信IP" in output


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("encoding_aes_key=short", "encoding_aes_key: 43 characters, not 5"),
        ("encoding_aes_key=" + "*" * 43, "encoding_aes_key: not the key"),
        ("api_base=ftp://qyapi.example", "api_base: an http(s) URL"),
        ("handover=phone", "handover: one of desk, wecom"),
        ("handover=wecom", "servicer_userid: required when handover is wecom"),
    ],
)
def test_wrong_settings_create_nothing(desk_site, change, problem):
    with pytest.raises(CommandError) as error:
        add_channel(desk_site, *GOOD, change)
    assert problem in str(error.value)
    assert not Inbox.objects.exists()


def test_a_missing_setting_is_named(desk_site):
    with pytest.raises(CommandError, match="open_kfid: required"):
        add_channel(desk_site, *GOOD[:-1])


def test_handover_to_wecom_with_a_servicer_is_accepted():
    settings = dict(item.split("=", 1) for item in GOOD)
    assert kinds.problems("wecom", {**settings, "handover": "wecom", "servicer_userid": "zs"}) == []
