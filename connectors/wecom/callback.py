"""WeCom's callbacks to the desk's URL, read safely into a small typed result.

Two requests arrive at the callback URL:

- GET ?msg_signature&timestamp&nonce&echostr: URL verification when the URL is saved in
  WeCom's admin; the answer is the decrypted echostr, as the bare response body.
- POST ?msg_signature&timestamp&nonce with an XML body <xml><ToUserName/><Encrypt/>
  <AgentID/></xml>; the decrypted <Encrypt> is another flat XML document. For the WeChat
  customer service it is the event `kf_msg_or_event`, which carries no message: only a
  `Token` (valid 10 minutes, to pass to kf/sync_msg) and the `OpenKfId` that has news. The
  messages themselves are read with sync_msg (client.py).

WeCom waits 5 seconds for the answer and otherwise sends the callback again (three tries in
all), so a view answers at once ("success" or an empty body) and leaves the sync to a process
of its own.

The XML is parsed with the standard library's expat, with any DOCTYPE refused: with no
document type declaration there is no entity to declare, so neither entity expansion (billion
laughs, quadratic blow-up) nor external entities can happen, and undefined entity references
are parse errors. defusedxml does the same with more machinery, but its last release is from
2021 and these documents are a handful of flat elements, so one refused handler is all it takes.
The body is limited in size before parsing.

Sources: "接收消息和事件" (https://developer.work.weixin.qq.com/document/path/94670: the
kf_msg_or_event callback and its fields), "加解密方案说明"
(https://developer.work.weixin.qq.com/document/path/91144: the envelope and the URL check).
"""

from dataclasses import dataclass
from xml.parsers import expat
from xml.sax.saxutils import escape

from .crypto import WeComCrypto, WeComCryptoError

# A kf_msg_or_event envelope is a few hundred bytes; anything this large is not WeCom's.
MAX_BODY_BYTES = 64 * 1024
# Root and children are all a callback has; deeper nesting is read past, never followed far.
MAX_DEPTH = 8
KF_EVENT = "kf_msg_or_event"


class CallbackRejected(ValueError):
    """A callback request that is malformed, too large, or fails its signature or decryption;
    the view answers it with a 4xx and logs `reason`, which holds no secret and no content."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class UrlVerification:
    """The GET that checks the URL: answer with `echostr` as the body."""

    echostr: str


@dataclass(frozen=True)
class KfMsgOrEvent:
    """New messages or events wait in WeCom for the customer-service account `open_kfid`:
    read them with sync_msg, passing `token` (valid for 10 minutes)."""

    token: str
    open_kfid: str
    corp_id: str
    create_time: int


@dataclass(frozen=True)
class OtherCallback:
    """A callback the WeChat customer service does not handle (another app's event): the view
    acknowledges it and does nothing."""

    msg_type: str
    event: str


def parse_flat_xml(body: bytes | str, *, root: str = "xml") -> dict[str, str]:
    """The text of each child of `root` (the last one wins for a repeated name). Refuses a
    body over MAX_BODY_BYTES, any DOCTYPE, malformed XML and a root of another name."""
    data = body.encode() if isinstance(body, str) else body
    if len(data) > MAX_BODY_BYTES:
        raise CallbackRejected("the body is too large")
    fields: dict[str, str] = {}
    stack: list[str] = []
    text: list[str] = []

    def refuse_doctype(*_args) -> None:
        raise CallbackRejected("a DOCTYPE is not allowed")

    def start(name: str, _attributes: dict) -> None:
        if not stack and name != root:
            raise CallbackRejected(f"the root element is not <{root}>")
        if len(stack) >= MAX_DEPTH:
            raise CallbackRejected("the XML is nested too deeply")
        stack.append(name)
        text.clear()

    def end(name: str) -> None:
        stack.pop()
        if len(stack) == 1:
            fields[name] = "".join(text)
        text.clear()

    def characters(data: str) -> None:
        if len(stack) == 2:
            text.append(data)

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise CallbackRejected(
            f"the XML is malformed ({expat.errors.messages[exc.code]})"
        ) from None
    return fields


def verify_url(
    crypto: WeComCrypto, *, msg_signature: str, timestamp: str, nonce: str, echostr: str
) -> UrlVerification:
    try:
        plain = crypto.verify_url(
            msg_signature=msg_signature, timestamp=timestamp, nonce=nonce, echostr=echostr
        )
    except WeComCryptoError as exc:
        raise CallbackRejected(exc.reason) from None
    return UrlVerification(echostr=plain)


def parse_callback(
    crypto: WeComCrypto, *, body: bytes, msg_signature: str, timestamp: str, nonce: str
) -> KfMsgOrEvent | OtherCallback:
    """The event inside a POSTed callback, once its signature and encryption hold."""
    envelope = parse_flat_xml(body)
    encrypted = envelope.get("Encrypt", "").strip()
    if not encrypted:
        raise CallbackRejected("the body has no <Encrypt>")
    try:
        plain = crypto.decrypt(
            msg_signature=msg_signature, timestamp=timestamp, nonce=nonce, encrypted=encrypted
        )
    except WeComCryptoError as exc:
        raise CallbackRejected(exc.reason) from None
    event = parse_flat_xml(plain)
    msg_type, name = event.get("MsgType", ""), event.get("Event", "")
    if msg_type != "event" or name != KF_EVENT:
        return OtherCallback(msg_type=msg_type, event=name)
    token = event.get("Token", "")
    if not token:
        raise CallbackRejected("the kf_msg_or_event has no Token")
    try:
        create_time = int(event.get("CreateTime") or 0)
    except ValueError:
        raise CallbackRejected("the CreateTime is not a number") from None
    return KfMsgOrEvent(
        token=token,
        open_kfid=event.get("OpenKfId", ""),
        corp_id=event.get("ToUserName", ""),
        create_time=create_time,
    )


def _cdata(value: str) -> str:
    # A value holding "]]>" cannot sit in one CDATA section; escaped text means the same.
    return f"<![CDATA[{value}]]>" if "]]>" not in value else escape(value)


def kf_event_xml(*, corp_id: str, token: str, open_kfid: str, create_time: int) -> str:
    """The plaintext of a kf_msg_or_event callback, as WeCom's documentation shows it."""
    return (
        f"<xml><ToUserName>{_cdata(corp_id)}</ToUserName>"
        f"<CreateTime>{int(create_time)}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{KF_EVENT}]]></Event>"
        f"<Token>{_cdata(token)}</Token>"
        f"<OpenKfId>{_cdata(open_kfid)}</OpenKfId></xml>"
    )


def callback_body(crypto: WeComCrypto, message: str, *, agent_id: str = "") -> bytes:
    """The body WeCom POSTs: `message` encrypted in the <xml><ToUserName/><Encrypt/><AgentID/>
    envelope (the signature travels in the query string: `crypto.sign`)."""
    encrypted = crypto.encrypt(message)
    return (
        f"<xml><ToUserName>{_cdata(crypto.receive_id)}</ToUserName>"
        f"<Encrypt>{_cdata(encrypted)}</Encrypt>"
        f"<AgentID>{_cdata(agent_id)}</AgentID></xml>"
    ).encode()


def encrypted_reply(crypto: WeComCrypto, message: str, *, timestamp: str, nonce: str) -> bytes:
    """A passive reply in WeCom's encrypted form (<Encrypt/><MsgSignature/><TimeStamp/>
    <Nonce/>). The customer service never needs one (it answers through kf/send_msg); it is
    here to complete the scheme."""
    encrypted = crypto.encrypt(message)
    signed = crypto.sign(timestamp=timestamp, nonce=nonce, encrypted=encrypted)
    return (
        f"<xml><Encrypt>{_cdata(encrypted)}</Encrypt>"
        f"<MsgSignature>{_cdata(signed)}</MsgSignature>"
        f"<TimeStamp>{_cdata(timestamp)}</TimeStamp>"
        f"<Nonce>{_cdata(nonce)}</Nonce></xml>"
    ).encode()
