"""The callback URL WeCom calls: the URL check when it is saved, a signed and encrypted
kf_msg_or_event stored as a sync request (and nothing else done in the request), and every
request that is not WeCom's refused without telling why."""

import logging
from urllib.parse import urlencode

import pytest
from django.test import Client

from connectors.wecom import callback
from connectors.wecom.account import callback_path
from connectors.wecom.models import WeComAccount

from .conftest import DESK_AES_KEY, DESK_TOKEN, KF

pytestmark = pytest.mark.django_db


def post(inbox, query: dict, body: bytes):
    return Client().post(
        f"{callback_path(inbox.pk)}?{urlencode(query)}", data=body, content_type="text/xml"
    )


def test_the_url_check_answers_the_decrypted_echostr(wecom_inbox, standin, desk_crypto):
    query, echo = standin.url_verification(desk_crypto)
    response = Client().get(f"{callback_path(wecom_inbox.pk)}?{urlencode(query)}")
    assert response.status_code == 200
    assert response.content.decode() == echo
    assert response["Content-Type"].startswith("text/plain")


def test_a_kf_event_is_stored_as_a_sync_request_and_answered_success(
    wecom_inbox, standin, desk_crypto
):
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    response = post(wecom_inbox, query, body)
    assert (response.status_code, response.content) == (200, b"success")
    account = WeComAccount.objects.get(inbox=wecom_inbox)
    token = callback.parse_callback(desk_crypto, body=body, **query).token
    assert account.sync_token == token and account.sync_requested_at is not None
    assert standin.calls == []  # no call to WeCom in the request


def test_a_bad_signature_is_refused_and_only_the_reason_logged(
    wecom_inbox, standin, desk_crypto, caplog
):
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    query["msg_signature"] = "0" * 40
    with caplog.at_level(logging.WARNING, logger="connectors"):
        response = post(wecom_inbox, query, body)
    assert response.status_code == 400
    assert not WeComAccount.objects.filter(inbox=wecom_inbox).exists()
    logged = caplog.text
    assert "callback refused" in logged
    assert DESK_TOKEN not in logged and DESK_AES_KEY not in logged


def test_a_body_that_is_not_wecom_s_or_too_large_is_refused(wecom_inbox, standin, desk_crypto):
    query, _ = standin.callback_request(desk_crypto, open_kfid=KF)
    assert post(wecom_inbox, query, b"<xml><Encrypt>nonsense</Encrypt></xml>").status_code == 400
    assert post(wecom_inbox, query, b"<!DOCTYPE x><xml/>").status_code == 400
    huge = b"<xml><Encrypt>" + b"A" * (callback.MAX_BODY_BYTES + 10) + b"</Encrypt></xml>"
    assert post(wecom_inbox, query, huge).status_code == 400
    assert not WeComAccount.objects.exists()


def test_an_unknown_or_disabled_inbox_is_not_found(wecom_inbox, standin, desk_crypto):
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    wecom_inbox.enabled = False
    wecom_inbox.save()
    assert post(wecom_inbox, query, body).status_code == 404
    wecom_inbox.enabled = True
    wecom_inbox.save()
    wecom_inbox.pk += 1000
    assert post(wecom_inbox, query, body).status_code == 404
    assert not WeComAccount.objects.exists()


def test_news_for_another_account_of_the_corp_is_acknowledged_and_left(
    wecom_inbox, standin, desk_crypto
):
    query, body = standin.callback_request(desk_crypto, open_kfid="wkanotheraccount")
    response = post(wecom_inbox, query, body)
    assert (response.status_code, response.content) == (200, b"success")
    assert not WeComAccount.objects.exists()
