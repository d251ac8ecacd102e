"""kf/sync_msg's items, typed, and what each one is to the desk.

sync_msg returns the messages and events of the last 3 days for the customer-service accounts
(msg_list, oldest first). Every item has msgid, send_time, origin and msgtype; messages also
have open_kfid, external_userid and, for a servicer's, servicer_userid; an event (msgtype
"event") carries its fields in an `event` object instead. The origins:

- 3: the WeChat customer wrote it: a customer turn;
- 4: an event WeCom pushes (the customer entered the session, a send failed, the session
  changed hands, a message was recalled…);
- 5: a servicer wrote it in the WeCom client: part of the transcript, never a customer turn.

Messages the desk sends through kf/send_msg are not returned by sync_msg at all ("不支持读取
通过发送消息接口发送的消息"), so the desk's own answers never come back as turns.

A customer who clicks an item of a menu message sends a text whose `text.menu_id` is the item's
id (how "talk to a human" arrives). Other message types become a short placeholder naming the
type (with the few plain fields a person reading the transcript can use: a location's name,
a link's title); their media stay in WeCom (media_id, fetched later if ever needed).

Source: "接收消息和事件" (https://developer.work.weixin.qq.com/document/path/94670: the
fields, the message types, the events and their fields).
"""

from dataclasses import dataclass, field
from typing import Any

ORIGIN_CUSTOMER = 3
ORIGIN_EVENT = 4
ORIGIN_SERVICER = 5

ENTER_SESSION = "enter_session"
MSG_SEND_FAIL = "msg_send_fail"
SERVICER_STATUS_CHANGE = "servicer_status_change"
SESSION_STATUS_CHANGE = "session_status_change"
USER_RECALL_MSG = "user_recall_msg"
SERVICER_RECALL_MSG = "servicer_recall_msg"

# session_status_change's change_type.
CHANGE_FROM_POOL = 1  # a servicer took the session from the queue
CHANGE_TRANSFERRED = 2  # handed to another servicer
CHANGE_ENDED = 3  # the session was ended
CHANGE_REOPENED = 4  # a servicer wrote in an ended or handed-over session

# What each non-text message type is called in its placeholder.
TYPE_NAMES = {
    "image": "image",
    "voice": "voice message",
    "video": "video",
    "file": "file",
    "location": "location",
    "link": "link",
    "business_card": "contact card",
    "miniprogram": "mini program",
    "msgmenu": "menu",
    "channels_shop_product": "Channels product",
    "channels_shop_order": "Channels order",
    "merged_msg": "chat history",
    "channels": "Channels post",
    "meeting": "meeting",
    "schedule": "schedule",
    "note": "note",
}
# A field value longer than this is cut in a placeholder: it is a hint, not the content.
PLACEHOLDER_FIELD_CHARS = 200


class MalformedMessage(ValueError):
    """A sync_msg item without the fields every item has."""


@dataclass(frozen=True)
class KfEvent:
    """The `event` object of an origin-4 item; fields an event type lacks are empty."""

    event_type: str
    open_kfid: str = ""
    external_userid: str = ""
    scene: str = ""
    scene_param: str = ""
    welcome_code: str = ""
    fail_msgid: str = ""
    fail_type: int | None = None
    servicer_userid: str = ""
    status: int | None = None
    change_type: int | None = None
    old_servicer_userid: str = ""
    new_servicer_userid: str = ""
    msg_code: str = ""
    recall_msgid: str = ""


@dataclass(frozen=True)
class KfMessage:
    """One item of sync_msg's msg_list."""

    msgid: str
    send_time: int
    origin: int
    msgtype: str
    open_kfid: str = ""
    external_userid: str = ""
    servicer_userid: str = ""
    text: str = ""  # text.content, for msgtype "text"
    menu_id: str = ""  # text.menu_id: the clicked menu item, when there was one
    event: KfEvent | None = None
    body: dict[str, Any] = field(default_factory=dict, repr=False)  # the type's own object


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_event(data: dict[str, Any]) -> KfEvent:
    return KfEvent(
        event_type=_str(data.get("event_type")),
        open_kfid=_str(data.get("open_kfid")),
        external_userid=_str(data.get("external_userid")),
        scene=_str(data.get("scene")),
        scene_param=_str(data.get("scene_param")),
        welcome_code=_str(data.get("welcome_code")),
        fail_msgid=_str(data.get("fail_msgid")),
        fail_type=_int(data.get("fail_type")),
        servicer_userid=_str(data.get("servicer_userid")),
        status=_int(data.get("status")),
        change_type=_int(data.get("change_type")),
        old_servicer_userid=_str(data.get("old_servicer_userid")),
        new_servicer_userid=_str(data.get("new_servicer_userid")),
        msg_code=_str(data.get("msg_code")),
        recall_msgid=_str(data.get("recall_msgid")),
    )


def parse_message(item: dict[str, Any]) -> KfMessage:
    """One msg_list item, typed; raises MalformedMessage without msgid, origin or msgtype."""
    if not isinstance(item, dict):
        raise MalformedMessage("a msg_list item is not an object")
    msgid, msgtype, origin = item.get("msgid"), item.get("msgtype"), _int(item.get("origin"))
    if not isinstance(msgid, str) or not msgid or not isinstance(msgtype, str) or origin is None:
        raise MalformedMessage("a msg_list item lacks msgid, msgtype or origin")
    body = item.get(msgtype) if isinstance(item.get(msgtype), dict) else {}
    event = parse_event(body) if msgtype == "event" else None
    return KfMessage(
        msgid=msgid,
        send_time=_int(item.get("send_time")) or 0,
        origin=origin,
        msgtype=msgtype,
        # An event names its account and customer inside the event object only.
        open_kfid=_str(item.get("open_kfid")) or (event.open_kfid if event else ""),
        external_userid=_str(item.get("external_userid"))
        or (event.external_userid if event else ""),
        servicer_userid=_str(item.get("servicer_userid")),
        text=_str(body.get("content")) if msgtype == "text" else "",
        menu_id=_str(body.get("menu_id")) if msgtype == "text" else "",
        event=event,
        body=body,
    )


def _cut(value: Any) -> str:
    text = " ".join(_str(value).split())
    if len(text) > PLACEHOLDER_FIELD_CHARS:
        return text[: PLACEHOLDER_FIELD_CHARS - 1] + "…"
    return text


def placeholder(message: KfMessage) -> str:
    """A short text standing for a message that is not plain text, naming its type."""
    name = TYPE_NAMES.get(message.msgtype, message.msgtype)
    body = message.body
    details = {
        "location": [body.get("name"), body.get("address")],
        "link": [body.get("title"), body.get("url")],
        "miniprogram": [body.get("title")],
        "merged_msg": [body.get("title")],
        "channels": [body.get("title")],
        "channels_shop_product": [body.get("title")],
    }.get(message.msgtype, [])
    detail = " ".join(part for part in (_cut(value) for value in details) if part)
    return f"[{name}: {detail}]" if detail else f"[{name}]"


@dataclass(frozen=True)
class CustomerTurn:
    """The customer wrote (origin 3): what the bot or a person answers."""

    msgid: str
    open_kfid: str
    external_userid: str
    send_time: int
    text: str
    msgtype: str
    menu_id: str = ""  # the menu item the customer clicked, if this text came from one


@dataclass(frozen=True)
class ServicerMessage:
    """A servicer wrote in the WeCom client (origin 5): the transcript's, not a turn."""

    msgid: str
    open_kfid: str
    external_userid: str
    servicer_userid: str
    send_time: int
    text: str


@dataclass(frozen=True)
class SessionEntered:
    """The customer opened the chat (enter_session). `welcome_code`, when WeCom sends one
    (no welcome in the last 48 hours and no message yet), lets the desk send one welcome through
    kf/send_msg_on_event within 20 seconds."""

    open_kfid: str
    external_userid: str
    scene: str
    scene_param: str
    welcome_code: str


@dataclass(frozen=True)
class SendFailed:
    """A message the desk sent did not reach the customer (msg_send_fail)."""

    open_kfid: str
    external_userid: str
    fail_msgid: str
    fail_type: int | None


@dataclass(frozen=True)
class SessionChanged:
    """The session changed hands (session_status_change): taken from the queue (1), handed to
    another servicer (2), ended (3), reopened by a servicer (4)."""

    open_kfid: str
    external_userid: str
    change_type: int | None
    old_servicer_userid: str
    new_servicer_userid: str
    msg_code: str


@dataclass(frozen=True)
class Recalled:
    """The customer (user_recall_msg) or a servicer (servicer_recall_msg) recalled a message."""

    open_kfid: str
    external_userid: str
    recall_msgid: str
    by_servicer: bool


@dataclass(frozen=True)
class Ignored:
    """An item the desk has no use for (a servicer's status change, an unknown event…)."""

    msgid: str
    why: str


DeskItem = (
    CustomerTurn
    | ServicerMessage
    | SessionEntered
    | SendFailed
    | SessionChanged
    | Recalled
    | Ignored
)


def to_desk(message: KfMessage) -> DeskItem:
    """What one sync_msg item means to the desk."""
    if message.msgtype == "event" or message.origin == ORIGIN_EVENT:
        return _event_to_desk(message)
    text = message.text if message.msgtype == "text" else placeholder(message)
    if message.origin == ORIGIN_CUSTOMER:
        return CustomerTurn(
            msgid=message.msgid,
            open_kfid=message.open_kfid,
            external_userid=message.external_userid,
            send_time=message.send_time,
            text=text,
            msgtype=message.msgtype,
            menu_id=message.menu_id,
        )
    if message.origin == ORIGIN_SERVICER:
        return ServicerMessage(
            msgid=message.msgid,
            open_kfid=message.open_kfid,
            external_userid=message.external_userid,
            servicer_userid=message.servicer_userid,
            send_time=message.send_time,
            text=text,
        )
    return Ignored(msgid=message.msgid, why=f"origin {message.origin}")


def _event_to_desk(message: KfMessage) -> DeskItem:
    event = message.event or KfEvent(event_type="")
    who = {"open_kfid": message.open_kfid, "external_userid": message.external_userid}
    if event.event_type == ENTER_SESSION:
        return SessionEntered(
            **who,
            scene=event.scene,
            scene_param=event.scene_param,
            welcome_code=event.welcome_code,
        )
    if event.event_type == MSG_SEND_FAIL:
        return SendFailed(**who, fail_msgid=event.fail_msgid, fail_type=event.fail_type)
    if event.event_type == SESSION_STATUS_CHANGE:
        return SessionChanged(
            **who,
            change_type=event.change_type,
            old_servicer_userid=event.old_servicer_userid,
            new_servicer_userid=event.new_servicer_userid,
            msg_code=event.msg_code,
        )
    if event.event_type in (USER_RECALL_MSG, SERVICER_RECALL_MSG):
        return Recalled(
            **who,
            recall_msgid=event.recall_msgid,
            by_servicer=event.event_type == SERVICER_RECALL_MSG,
        )
    return Ignored(msgid=message.msgid, why=f"event {event.event_type or 'without a type'}")
