"""An async client of WeCom's WeChat customer-service API (httpx).

- gettoken (GET /cgi-bin/gettoken?corpid&corpsecret → access_token, expires_in, normally 7200
  s). The token is cached and fetched again `REFRESH_MARGIN_SECONDS` before it expires; many
  callers at once fetch it once (a lock, checked again inside). WeCom may invalidate a token
  early, so a call answered with an invalid or expired token (TOKEN_REJECTED) fetches a new
  one and is tried once more.
- kf/sync_msg (cursor, token, limit ≤ 1000, open_kfid → msg_list, next_cursor, has_more),
  with `sync_pages` reading on until has_more is 0 (a page may be empty while has_more is 1).
- kf/send_msg (text, and msgmenu: a head, click items with ids, a tail), kf/send_msg_on_event
  (the welcome an enter_session event's welcome_code allows).
- kf/service_state/get and kf/service_state/trans (hand a customer to a servicer, to the
  queue, back to the bot, or end the session).

Every answer with a non-zero errcode raises WeComAPIError(errcode, errmsg); a request that
gets no JSON answer raises WeComUnavailable. Neither message holds the corp secret or the
access token, and the URL httpx logs (the token travels in the query string, as WeCom
requires) is redacted by a filter on httpx's logger.

Sources: "获取access_token" (https://developer.work.weixin.qq.com/document/path/91039),
"接收消息和事件" (https://developer.work.weixin.qq.com/document/path/94670), "发送消息"
(https://developer.work.weixin.qq.com/document/path/94677), "发送欢迎语等事件响应消息"
(https://developer.work.weixin.qq.com/document/path/95122), "分配客服会话"
(https://developer.work.weixin.qq.com/document/path/94669), the global error codes (40014
invalid access_token, 42001 access_token expired, 40001 invalid secret).
"""

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .messages import KfMessage, MalformedMessage, parse_message
from .texts import TEXT_MAX_BYTES

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
# WeCom's answers to a token it no longer takes: fetch a new one and try once more.
TOKEN_REJECTED = frozenset({40001, 40014, 42001})
# Worth trying again later: -1 "system busy" (the global error codes advise a few retries),
# 45009 the call-frequency limit.
RETRY_LATER = frozenset({-1, 45009})
# kf/send_msg refused by the reply rules (window.py): 5 already sent, the 48 hours over, or a
# session the API may not send to. Permanent for this message until the customer writes again.
REPLY_REFUSED = frozenset({95001, 95002, 95018})
REFRESH_MARGIN_SECONDS = 300.0
SYNC_LIMIT_MAX = 1000
MENU_ITEMS_MAX = 10
MENU_TEXT_MAX_BYTES = 1024
MENU_ID_MAX_BYTES = 64
MENU_CONTENT_MAX_BYTES = 128
MSGID = re.compile(r"[0-9A-Za-z_-]{1,32}")
# The states service_state/trans moves a session to ("分配客服会话").
STATE_UNTREATED = 0
STATE_BOT = 1
STATE_QUEUE = 2
STATE_SERVICER = 3
STATE_ENDED = 4

logger = logging.getLogger(__name__)

_SECRET_PARAMS = re.compile(r"(access_token|corpsecret)=[^&\s\"]*")


class _RedactSecrets(logging.Filter):
    """Hides access_token and corpsecret in the URLs httpx logs at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_PARAMS.sub(r"\1=[redacted]", str(arg))
                if isinstance(arg, httpx.URL | str)
                else arg
                for arg in record.args
            )
        return True


_REDACTION = _RedactSecrets()


def _redact_httpx_logs() -> None:
    httpx_logger = logging.getLogger("httpx")
    if _REDACTION not in httpx_logger.filters:
        httpx_logger.addFilter(_REDACTION)


class WeComError(Exception):
    """Any failure of a WeCom call."""


class WeComAPIError(WeComError):
    """WeCom answered with a non-zero errcode."""

    def __init__(self, *, path: str, errcode: int, errmsg: str):
        super().__init__(f"WeCom {path}: errcode {errcode}: {errmsg}")
        self.path = path
        self.errcode = errcode
        self.errmsg = errmsg

    @property
    def retryable(self) -> bool:
        return self.errcode in RETRY_LATER

    @property
    def reply_refused(self) -> bool:
        return self.errcode in REPLY_REFUSED


class WeComUnavailable(WeComError):
    """No usable answer: a network error, a timeout, an HTTP error status or a body that is
    not JSON. Worth retrying later."""


@dataclass(frozen=True)
class SyncPage:
    messages: list[KfMessage]
    next_cursor: str
    has_more: bool
    skipped: int = 0  # items without the fields every item has, left out of `messages`


@dataclass(frozen=True)
class ServiceState:
    state: int
    servicer_userid: str = ""  # set while a servicer holds the session (state 3)


@dataclass(frozen=True)
class MenuClick:
    """A menu item the customer can click; it comes back as a text message with menu_id=id."""

    id: str
    content: str


@dataclass(frozen=True)
class Menu:
    head: str
    items: list[MenuClick]
    tail: str = ""


def _check_bytes(value: str, *, limit: int, what: str, allow_empty: bool = True) -> None:
    size = len(value.encode())
    if size > limit or (not allow_empty and size == 0):
        bounds = f"up to {limit}" if allow_empty else f"1 to {limit}"
        raise ValueError(f"{what} must be {bounds} bytes of UTF-8, not {size}")


def _check_msgid(msgid: str | None) -> None:
    if msgid is not None and not MSGID.fullmatch(msgid):
        raise ValueError("a msgid is 1 to 32 characters of [0-9A-Za-z_-]")


class WeComClient:
    """One corp's customer-service API; share one per process (it holds the token)."""

    def __init__(
        self,
        *,
        corp_id: str,
        corp_secret: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        proxy: str | None = None,
    ):
        self.corp_id = corp_id
        self._secret = corp_secret
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0
        self._token_lock = asyncio.Lock()
        self.token_fetches = 0  # how many times gettoken was called (for metrics and tests)
        _redact_httpx_logs()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
            # WeCom answers only servers whose address is on the app's trusted-IP list (errcode
            # 60020), so a desk may have to go out through a fixed-address proxy: given here,
            # never picked up from the environment.
            trust_env=False,
            proxy=proxy,
        )

    def __repr__(self) -> str:
        return f"WeComClient(corp_id={self.corp_id!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "WeComClient":
        return self

    async def __aexit__(self, *_exc) -> None:
        await self.aclose()

    # The access token.

    async def access_token(self) -> str:
        """A token valid for at least the refresh margin; fetched once for concurrent callers."""
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        async with self._token_lock:
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token
            data = await self._request("GET", "/cgi-bin/gettoken", params=self._credentials())
            token, expires_in = data.get("access_token"), data.get("expires_in")
            if not isinstance(token, str) or not token or not isinstance(expires_in, int):
                raise WeComUnavailable("WeCom gettoken answered without a token")
            self.token_fetches += 1
            # A short-lived token is renewed at half its life, not after it has expired.
            margin = min(self._refresh_margin, expires_in / 2)
            self._token, self._refresh_at = token, self._clock() + expires_in - margin
            return token

    def _credentials(self) -> dict[str, str]:
        return {"corpid": self.corp_id, "corpsecret": self._secret}

    def _forget(self, token: str) -> None:
        # Only the token that was refused: a caller that already fetched a new one keeps it.
        if self._token == token:
            self._token = None

    # The calls.

    async def _request(
        self, method: str, path: str, *, params: dict | None = None, json: dict | None = None
    ) -> dict[str, Any]:
        try:
            response = await self._http.request(method, path, params=params, json=json)
        except httpx.HTTPError as exc:
            # `from None`: httpx's own exception may carry the URL, and the URL the token.
            raise WeComUnavailable(f"WeCom {path}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise WeComUnavailable(f"WeCom {path}: HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise WeComUnavailable(f"WeCom {path}: the answer is not JSON") from None
        if not isinstance(data, dict):
            raise WeComUnavailable(f"WeCom {path}: the answer is not a JSON object")
        errcode = data.get("errcode", 0)
        if errcode != 0:
            raise WeComAPIError(
                path=path, errcode=int(errcode), errmsg=self._scrub(str(data.get("errmsg", "")))
            )
        return data

    def _scrub(self, text: str) -> str:
        for secret in (self._secret, self._token):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text

    async def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `payload` to `path` with the access token; a refused token is replaced and
        the call tried once more."""
        token = await self.access_token()
        try:
            return await self._request("POST", path, params={"access_token": token}, json=payload)
        except WeComAPIError as exc:
            if exc.errcode not in TOKEN_REJECTED:
                raise
            logger.info(
                "WeCom refused the access token (errcode %s); fetching a new one", exc.errcode
            )
            self._forget(token)
        token = await self.access_token()
        return await self._request("POST", path, params={"access_token": token}, json=payload)

    async def sync_msg(
        self, *, cursor: str = "", token: str = "", open_kfid: str = "", limit: int = SYNC_LIMIT_MAX
    ) -> SyncPage:
        """One page of messages and events after `cursor` (from the oldest of the last 3
        days without one). `token` is the callback's; without it WeCom limits the rate hard."""
        if not 1 <= limit <= SYNC_LIMIT_MAX:
            raise ValueError(f"limit must be 1 to {SYNC_LIMIT_MAX}")
        payload: dict[str, Any] = {"limit": limit}
        if cursor:
            payload["cursor"] = cursor
        if token:
            payload["token"] = token
        if open_kfid:
            payload["open_kfid"] = open_kfid
        data = await self.call("/cgi-bin/kf/sync_msg", payload)
        messages, skipped = [], 0
        for item in data.get("msg_list") or []:
            try:
                messages.append(parse_message(item))
            except MalformedMessage:
                skipped += 1
        if skipped:
            logger.warning("WeCom sync_msg: %d items without msgid, msgtype or origin", skipped)
        return SyncPage(
            messages=messages,
            next_cursor=str(data.get("next_cursor") or cursor),
            has_more=bool(data.get("has_more")),
            skipped=skipped,
        )

    async def sync_pages(
        self,
        *,
        cursor: str = "",
        token: str = "",
        open_kfid: str = "",
        limit: int = SYNC_LIMIT_MAX,
        max_pages: int = 100,
    ) -> AsyncIterator[SyncPage]:
        """Pages from `cursor` until has_more is 0 (or `max_pages`, so a cursor that never
        moves cannot loop forever). Store each page's next_cursor once its messages are
        stored, so a crash reads again from there, not from the start."""
        for _ in range(max_pages):
            page = await self.sync_msg(cursor=cursor, token=token, open_kfid=open_kfid, limit=limit)
            yield page
            if not page.has_more:
                return
            cursor = page.next_cursor

    async def send_text(
        self, *, open_kfid: str, external_userid: str, content: str, msgid: str | None = None
    ) -> str:
        """Send a text of at most 2048 bytes (texts.split_text cuts a longer one); returns the
        message's id: `msgid` if given, which WeCom wants unique per account and refuses a
        second time, so a send retried after a lost answer cannot reach the customer twice."""
        _check_bytes(content, limit=TEXT_MAX_BYTES, what="a text", allow_empty=False)
        return await self._send(
            open_kfid, external_userid, msgid, {"msgtype": "text", "text": {"content": content}}
        )

    async def send_menu(
        self, *, open_kfid: str, external_userid: str, menu: Menu, msgid: str | None = None
    ) -> str:
        """Send a menu message: `head`, the click items (at most 10), `tail`."""
        if not 1 <= len(menu.items) <= MENU_ITEMS_MAX:
            raise ValueError(f"a menu has 1 to {MENU_ITEMS_MAX} items")
        _check_bytes(menu.head, limit=MENU_TEXT_MAX_BYTES, what="a menu's head")
        _check_bytes(menu.tail, limit=MENU_TEXT_MAX_BYTES, what="a menu's tail")
        for item in menu.items:
            _check_bytes(item.id, limit=MENU_ID_MAX_BYTES, what="a menu id", allow_empty=False)
            _check_bytes(
                item.content, limit=MENU_CONTENT_MAX_BYTES, what="a menu item", allow_empty=False
            )
        body = {
            "head_content": menu.head,
            "list": [
                {"type": "click", "click": {"id": item.id, "content": item.content}}
                for item in menu.items
            ],
            "tail_content": menu.tail,
        }
        return await self._send(
            open_kfid, external_userid, msgid, {"msgtype": "msgmenu", "msgmenu": body}
        )

    async def _send(
        self, open_kfid: str, external_userid: str, msgid: str | None, message: dict
    ) -> str:
        _check_msgid(msgid)
        payload = {"touser": external_userid, "open_kfid": open_kfid, **message}
        if msgid is not None:
            payload["msgid"] = msgid
        data = await self.call("/cgi-bin/kf/send_msg", payload)
        return str(data.get("msgid") or msgid or "")

    async def send_on_event(self, *, code: str, content: str, msgid: str | None = None) -> str:
        """Send the one text an event's code allows (enter_session's welcome_code: within 20
        seconds; the codes of service_state/trans and session_status_change)."""
        _check_bytes(content, limit=TEXT_MAX_BYTES, what="a text", allow_empty=False)
        _check_msgid(msgid)
        payload: dict[str, Any] = {"code": code, "msgtype": "text", "text": {"content": content}}
        if msgid is not None:
            payload["msgid"] = msgid
        data = await self.call("/cgi-bin/kf/send_msg_on_event", payload)
        return str(data.get("msgid") or msgid or "")

    async def service_state_get(self, *, open_kfid: str, external_userid: str) -> ServiceState:
        data = await self.call(
            "/cgi-bin/kf/service_state/get",
            {"open_kfid": open_kfid, "external_userid": external_userid},
        )
        return ServiceState(
            state=int(data.get("service_state", STATE_ENDED)),
            servicer_userid=str(data.get("servicer_userid") or ""),
        )

    async def service_state_trans(
        self,
        *,
        open_kfid: str,
        external_userid: str,
        service_state: int,
        servicer_userid: str = "",
    ) -> str:
        """Move the session to `service_state` (a servicer needs `servicer_userid`); the
        msg_code WeCom may return lets one message go with send_on_event."""
        if service_state == STATE_SERVICER and not servicer_userid:
            raise ValueError("handing a session to a servicer needs the servicer's userid")
        payload: dict[str, Any] = {
            "open_kfid": open_kfid,
            "external_userid": external_userid,
            "service_state": service_state,
        }
        if servicer_userid:
            payload["servicer_userid"] = servicer_userid
        data = await self.call("/cgi-bin/kf/service_state/trans", payload)
        return str(data.get("msg_code") or "")
