"""sync_msg items, typed, and what each one is to the desk."""

import pytest

from connectors.wecom.messages import (
    CustomerTurn,
    Ignored,
    MalformedMessage,
    Recalled,
    SendFailed,
    ServicerMessage,
    SessionChanged,
    SessionEntered,
    parse_message,
    to_desk,
)

# Shaped as the items of "接收消息和事件" (https://developer.work.weixin.qq.com/document/path/94670).
BASE = {
    "msgid": "from_msgid_4622416642169452483",
    "open_kfid": "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q",
    "external_userid": "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw",
    "send_time": 1615478585,
    "origin": 3,
}


def _desk(**item):
    return to_desk(parse_message(BASE | item))


def test_a_customer_text_is_a_customer_turn():
    turn = _desk(msgtype="text", text={"content": "我的订单到哪了？"})
    assert turn == CustomerTurn(
        msgid=BASE["msgid"],
        open_kfid=BASE["open_kfid"],
        external_userid=BASE["external_userid"],
        send_time=1615478585,
        text="我的订单到哪了？",
        msgtype="text",
    )


def test_a_clicked_menu_item_arrives_as_text_with_its_id():
    turn = _desk(msgtype="text", text={"content": "转人工", "menu_id": "human"})
    assert isinstance(turn, CustomerTurn)
    assert (turn.text, turn.menu_id) == ("转人工", "human")


@pytest.mark.parametrize(
    ("item", "text"),
    [
        ({"msgtype": "image", "image": {"media_id": "M"}}, "[image]"),
        ({"msgtype": "voice", "voice": {"media_id": "M"}}, "[voice message]"),
        ({"msgtype": "video", "video": {"media_id": "M"}}, "[video]"),
        ({"msgtype": "file", "file": {"media_id": "M"}}, "[file]"),
        (
            {
                "msgtype": "location",
                "location": {
                    "latitude": 23.1,
                    "longitude": 113.3,
                    "name": "天河城",
                    "address": "广州市天河路208号",
                },
            },
            "[location: 天河城 广州市天河路208号]",
        ),
        (
            {"msgtype": "link", "link": {"title": "Order 42", "url": "https://shop.example/42"}},
            "[link: Order 42 https://shop.example/42]",
        ),
        ({"msgtype": "business_card", "business_card": {"userid": "U"}}, "[contact card]"),
        ({"msgtype": "miniprogram", "miniprogram": {"title": "Shop"}}, "[mini program: Shop]"),
        ({"msgtype": "something_new", "something_new": {}}, "[something_new]"),
    ],
)
def test_other_message_types_become_a_placeholder_naming_the_type(item, text):
    turn = _desk(**item)
    assert isinstance(turn, CustomerTurn)
    assert turn.text == text and turn.msgtype == item["msgtype"]


def test_a_placeholders_detail_is_cut_short():
    turn = _desk(msgtype="link", link={"title": "t" * 1000, "url": ""})
    assert len(turn.text) < 220 and turn.text.endswith("…]")


def test_a_servicers_message_is_not_a_customer_turn():
    item = _desk(origin=5, msgtype="text", text={"content": "您好"}, servicer_userid="zhangsan")
    assert isinstance(item, ServicerMessage)
    assert (item.servicer_userid, item.text) == ("zhangsan", "您好")


def _event(**event):
    item = {"msgid": "evt1", "send_time": 1, "origin": 4, "msgtype": "event", "event": event}
    return to_desk(parse_message(item))


def test_entering_the_session_carries_the_welcome_code_and_who():
    entered = _event(
        event_type="enter_session",
        open_kfid="wk1",
        external_userid="wm1",
        scene="123",
        scene_param="abc",
        welcome_code="aaaaaa",
    )
    assert entered == SessionEntered(
        open_kfid="wk1",
        external_userid="wm1",
        scene="123",
        scene_param="abc",
        welcome_code="aaaaaa",
    )


def test_a_failed_send_names_the_message():
    failed = _event(
        event_type="msg_send_fail",
        open_kfid="wk1",
        external_userid="wm1",
        fail_msgid="m9",
        fail_type=4,
    )
    assert failed == SendFailed(
        open_kfid="wk1", external_userid="wm1", fail_msgid="m9", fail_type=4
    )


def test_a_session_change_carries_the_servicers_and_code():
    changed = _event(
        event_type="session_status_change",
        open_kfid="wk1",
        external_userid="wm1",
        change_type=1,
        new_servicer_userid="zhangsan",
        msg_code="CODE",
    )
    assert isinstance(changed, SessionChanged)
    assert (changed.change_type, changed.new_servicer_userid, changed.msg_code) == (
        1,
        "zhangsan",
        "CODE",
    )


@pytest.mark.parametrize(
    ("event_type", "by_servicer"), [("user_recall_msg", False), ("servicer_recall_msg", True)]
)
def test_a_recall_says_who_recalled_what(event_type, by_servicer):
    recalled = _event(
        event_type=event_type, open_kfid="wk1", external_userid="wm1", recall_msgid="m3"
    )
    assert recalled == Recalled(
        open_kfid="wk1", external_userid="wm1", recall_msgid="m3", by_servicer=by_servicer
    )


def test_a_servicers_status_and_unknown_events_are_ignored():
    assert isinstance(
        _event(event_type="servicer_status_change", servicer_userid="z", status=1), Ignored
    )
    assert _event(event_type="brand_new").why == "event brand_new"


def test_an_event_takes_its_account_and_customer_from_the_event_object():
    message = parse_message(
        {
            "msgid": "e",
            "send_time": 1,
            "origin": 4,
            "msgtype": "event",
            "event": {"event_type": "enter_session", "open_kfid": "wk9", "external_userid": "wm9"},
        }
    )
    assert (message.open_kfid, message.external_userid) == ("wk9", "wm9")


@pytest.mark.parametrize(
    "item",
    [
        {},
        {"msgid": "m", "msgtype": "text"},  # no origin
        {"msgid": "", "msgtype": "text", "origin": 3},
        {"msgid": "m", "origin": 3},
        {"msgid": "m", "msgtype": "text", "origin": "three"},
        "not an object",
    ],
)
def test_an_item_without_its_common_fields_is_malformed(item):
    with pytest.raises(MalformedMessage):
        parse_message(item)


def test_wrong_field_types_are_read_as_empty_not_crashed_on():
    turn = _desk(msgtype="text", text={"content": 42}, send_time="soon")
    assert isinstance(turn, CustomerTurn) and turn.text == "" and turn.send_time == 0
