"""Reading WeCom's callbacks: the URL check, the kf_msg_or_event POST, and hostile bodies."""

import pytest

from connectors.wecom import callback
from connectors.wecom.callback import (
    CallbackRejected,
    KfMsgOrEvent,
    OtherCallback,
    parse_callback,
    parse_flat_xml,
)

from .conftest import KF

# The kf_msg_or_event example of "接收消息和事件"
# (https://developer.work.weixin.qq.com/document/path/94670).
DOCUMENTED_EVENT = """<xml>
   <ToUserName><![CDATA[ww12345678910]]></ToUserName>
   <CreateTime>1348831860</CreateTime>
   <MsgType><![CDATA[event]]></MsgType>
   <Event><![CDATA[kf_msg_or_event]]></Event>
   <Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>
   <OpenKfId><![CDATA[wkxxxxxxx]]></OpenKfId>
</xml>"""


def _signed(crypto, plaintext: str) -> tuple[dict[str, str], bytes]:
    body = callback.callback_body(crypto, plaintext)
    encrypted = parse_flat_xml(body)["Encrypt"]
    query = {"timestamp": "1700000000", "nonce": "7"}
    return query | {"msg_signature": crypto.sign(encrypted=encrypted, **query)}, body


def test_the_documented_event_is_read(desk_crypto):
    query, body = _signed(desk_crypto, DOCUMENTED_EVENT)
    event = parse_callback(desk_crypto, body=body, **query)
    assert event == KfMsgOrEvent(
        token="ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR",
        open_kfid="wkxxxxxxx",
        corp_id="ww12345678910",
        create_time=1348831860,
    )


def test_the_standins_callback_is_read_and_its_token_names_the_account(standin, desk_crypto):
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    event = parse_callback(desk_crypto, body=body, **query)
    assert isinstance(event, KfMsgOrEvent)
    assert event.open_kfid == KF and event.corp_id == standin.corp_id
    assert event.token.startswith("ENC")


def test_the_url_check_answers_with_the_plain_echostr(standin, desk_crypto):
    query, echo = standin.url_verification(desk_crypto)
    assert callback.verify_url(desk_crypto, **query).echostr == echo


def test_a_url_check_with_a_wrong_signature_is_rejected(standin, desk_crypto):
    query, _echo = standin.url_verification(desk_crypto)
    with pytest.raises(CallbackRejected, match="signature"):
        callback.verify_url(desk_crypto, **(query | {"msg_signature": "0" * 40}))


def test_another_kind_of_event_is_passed_over(desk_crypto):
    plain = (
        "<xml><ToUserName>ww1</ToUserName><MsgType>event</MsgType>"
        "<Event>change_contact</Event></xml>"
    )
    query, body = _signed(desk_crypto, plain)
    assert parse_callback(desk_crypto, body=body, **query) == OtherCallback(
        msg_type="event", event="change_contact"
    )


def test_a_tampered_body_is_rejected(standin, desk_crypto):
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    encrypted = parse_flat_xml(body)["Encrypt"]
    forged = body.replace(encrypted.encode(), desk_crypto.encrypt("<xml/>").encode())
    with pytest.raises(CallbackRejected) as rejected:
        parse_callback(desk_crypto, body=forged, **query)
    assert rejected.value.reason == "the signature does not match"


def test_a_callback_for_another_corp_is_rejected(standin, desk_crypto):
    other = type(desk_crypto)(
        token=desk_crypto.token,
        encoding_aes_key="jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        receive_id="wwSomeoneElse",
    )
    query, body = standin.callback_request(other, open_kfid=KF)
    with pytest.raises(CallbackRejected, match="receive id"):
        parse_callback(desk_crypto, body=body, **query)


def test_a_kf_event_without_its_token_is_rejected(desk_crypto):
    plain = "<xml><MsgType>event</MsgType><Event>kf_msg_or_event</Event></xml>"
    query, body = _signed(desk_crypto, plain)
    with pytest.raises(CallbackRejected, match="no Token"):
        parse_callback(desk_crypto, body=body, **query)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<xml><Encrypt>&lol3;</Encrypt></xml>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<xml><Encrypt>&secret;</Encrypt></xml>"""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL_ENTITY, "DOCTYPE"),
        (b"<xml><Encrypt>&undeclared;</Encrypt></xml>", "malformed"),
        (b"<xml><Encrypt>abc</Encrypt>", "malformed"),
        (b"not xml at all", "malformed"),
        (b"", "malformed"),
        (b"<html><Encrypt>abc</Encrypt></html>", "root"),
        (b"<xml>" + b"<a>" * 20 + b"</a>" * 20 + b"</xml>", "nested"),
        (b"<xml><Encrypt>" + b"A" * 70_000 + b"</Encrypt></xml>", "too large"),
        (b"<xml><ToUserName>ww1</ToUserName></xml>", "no <Encrypt>"),
    ],
)
def test_hostile_or_malformed_bodies_are_rejected(desk_crypto, body, reason):
    with pytest.raises(CallbackRejected, match=reason):
        parse_callback(desk_crypto, body=body, msg_signature="x", timestamp="1", nonce="2")


def test_flat_xml_reads_cdata_text_and_escapes():
    fields = parse_flat_xml("<xml><A><![CDATA[<b>&]]></A><B>1 &lt; 2</B><C/><D>  kept  </D></xml>")
    assert fields == {"A": "<b>&", "B": "1 < 2", "C": "", "D": "  kept  "}


def test_a_value_holding_a_cdata_end_survives_the_envelope(desk_crypto):
    plain = callback.kf_event_xml(corp_id="ww1", token="a]]>b", open_kfid="wk<1>", create_time=1)
    query, body = _signed(desk_crypto, plain)
    event = parse_callback(desk_crypto, body=body, **query)
    assert (event.token, event.open_kfid) == ("a]]>b", "wk<1>")


def test_an_encrypted_reply_decrypts_with_its_own_signature(desk_crypto):
    reply = callback.encrypted_reply(desk_crypto, "<xml>hi</xml>", timestamp="5", nonce="6")
    fields = parse_flat_xml(reply)
    assert (fields["TimeStamp"], fields["Nonce"]) == ("5", "6")
    plain = desk_crypto.decrypt(
        msg_signature=fields["MsgSignature"], timestamp="5", nonce="6", encrypted=fields["Encrypt"]
    )
    assert plain == "<xml>hi</xml>"
