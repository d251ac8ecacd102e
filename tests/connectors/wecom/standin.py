"""A stand-in of WeCom's customer-service API for the tests: a real HTTP server on a free
localhost port, answering as WeCom's documentation says WeCom answers.

It is not WeCom and checks only what the tests rely on:

- /cgi-bin/gettoken: the corp id and secret (40013, 40001 when wrong); the same token while it
  is valid, a new one after; `expire_tokens()` makes WeCom's early invalidation happen (42001).
  An unknown token is 40014.
- /cgi-bin/kf/sync_msg: a log of scripted items (customer messages, servicer messages, events),
  read after an opaque cursor, at most `limit` at a time, with next_cursor and has_more (and, on
  demand, an empty page that still has more, which WeCom warns of); only the last 3 days; a callback token (from `callback_request`) must be known and under 10
  minutes old (95007).
- /cgi-bin/kf/send_msg: records what was sent; refuses a send outside the session states 0 and
  1 (95018), after the 48 hours (95002), or beyond 5 since the customer's last message (95001);
  `send_failures` makes chosen calls fail (-1 "system busy": WeCom's advice is to retry).
- /cgi-bin/kf/send_msg_on_event: one message per code it issued.
- /cgi-bin/kf/service_state/get and /trans: the documented states and moves (95016 for a move
  the table does not allow, 95014 for a servicer it does not know).

Its clock is time.time() plus `offset`, which `advance()` moves, so the 48 hours pass in a
test. `callback_request()` builds the signed, encrypted POST WeCom sends to the desk's callback
URL (with the desk's own crypto), so an integration test can play WeCom end to end.
"""

import http.server
import itertools
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from connectors.wecom import callback
from connectors.wecom.crypto import WeComCrypto

TOKEN_TTL_SECONDS = 7200
SYNC_TOKEN_TTL_SECONDS = 600
HISTORY_SECONDS = 3 * 24 * 3600
WINDOW_SECONDS = 48 * 3600
MAX_REPLIES = 5
# The moves service_state/trans allows, from the table of "分配客服会话".
ALLOWED_MOVES = {0: {1, 2, 3}, 1: {2, 3}, 2: {3}, 3: {3, 4}, 4: set()}


@dataclass
class Session:
    state: int = 4  # ended / not started, until the customer writes
    servicer_userid: str = ""
    last_customer_at: float | None = None
    sent_since: int = 0


@dataclass
class WeComAPIStandIn:
    corp_id: str = "wwstandin0001"
    corp_secret: str = "standin-corp-secret"
    token_ttl: int = TOKEN_TTL_SECONDS
    servicers: set[str] = field(default_factory=lambda: {"zhangsan"})
    offset: float = 0.0
    # Answer the next sync_msg with no messages and has_more 1, as WeCom says it may.
    empty_page_next: bool = False
    token_requests: int = 0
    sent: list[dict] = field(default_factory=list)  # send_msg and send_msg_on_event payloads
    # send_msg calls (counted from 1) to answer with an errcode instead: {2: -1} makes the
    # second one "system busy".
    send_failures: dict[int, int] = field(default_factory=dict)
    send_calls: int = 0
    calls: list[tuple[str, dict]] = field(default_factory=list)  # (path, JSON body) of API calls
    _tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    _sync_tokens: dict[str, float] = field(default_factory=dict)
    _event_codes: set[str] = field(default_factory=set)
    _log: list[tuple[int, dict]] = field(default_factory=list)  # (sequence, msg_list item)
    _sessions: dict[tuple[str, str], Session] = field(default_factory=dict)
    _seq: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: "_Server | None" = None

    # The clock.

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += seconds

    # Running.

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "WeComAPIStandIn":
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer(None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(self.rfile.read(length))

            def _answer(self, raw: bytes | None):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = None
                answer = standin.handle(url.path, query, body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        # Port 0: the system picks a free port, so parallel runs never collide.
        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A short poll, so stopping the server at each test's end takes no half second.
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # Scripting WeCom's side.

    def expire_tokens(self) -> None:
        """WeCom invalidating every access token early."""
        with self._lock:
            self._tokens = {token: self.now() - 1 for token in self._tokens}

    def customer_says(
        self, open_kfid: str, external_userid: str, text: str = "", **message: Any
    ) -> str:
        """A customer message (origin 3): text, or `msgtype=` and the type's object."""
        msgtype = message.pop("msgtype", "text")
        body = {"content": text, **message} if msgtype == "text" else message
        with self._lock:
            session = self._session(open_kfid, external_userid)
            now = self.now()
            session.last_customer_at, session.sent_since = now, 0
            if session.state == 4:
                session.state = 0  # a new consultation starts untreated
            return self._append(
                origin=3,
                msgtype=msgtype,
                body=body,
                send_time=now,
                open_kfid=open_kfid,
                external_userid=external_userid,
            )

    def servicer_says(self, open_kfid: str, external_userid: str, servicer: str, text: str) -> str:
        with self._lock:
            return self._append(
                origin=5,
                msgtype="text",
                body={"content": text},
                send_time=self.now(),
                open_kfid=open_kfid,
                external_userid=external_userid,
                servicer_userid=servicer,
            )

    def event(self, event_type: str, open_kfid: str, external_userid: str, **fields: Any) -> str:
        """An event item (origin 4); enter_session gets a welcome_code unless one is given."""
        if event_type == "enter_session":
            fields.setdefault("welcome_code", self._new_code())
        body = {
            "event_type": event_type,
            "open_kfid": open_kfid,
            "external_userid": external_userid,
            **fields,
        }
        with self._lock:
            return self._append(origin=4, msgtype="event", body=body, send_time=self.now())

    def raw_item(self, item: dict) -> None:
        """An item as given, however malformed (send_time defaults to now)."""
        with self._lock:
            self._log.append((next(self._seq), {"send_time": int(self.now()), **item}))

    def session(self, open_kfid: str, external_userid: str) -> Session:
        with self._lock:
            return self._session(open_kfid, external_userid)

    def callback_request(
        self, crypto: WeComCrypto, *, open_kfid: str
    ) -> tuple[dict[str, str], bytes]:
        """The query string and body of the kf_msg_or_event POST WeCom sends the desk, signed
        and encrypted with the desk's settings; its Token is good for sync_msg for 10 minutes."""
        token = "ENC" + secrets.token_urlsafe(24)
        with self._lock:
            self._sync_tokens[token] = self.now() + SYNC_TOKEN_TTL_SECONDS
        plain = callback.kf_event_xml(
            corp_id=crypto.receive_id,
            token=token,
            open_kfid=open_kfid,
            create_time=int(self.now()),
        )
        body = callback.callback_body(crypto, plain)
        encrypted = callback.parse_flat_xml(body)["Encrypt"]
        timestamp, nonce = str(int(self.now())), str(secrets.randbelow(10**9))
        query = {
            "msg_signature": crypto.sign(timestamp=timestamp, nonce=nonce, encrypted=encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        return query, body

    def url_verification(self, crypto: WeComCrypto) -> tuple[dict[str, str], str]:
        """The GET query WeCom sends when the callback URL is saved, and the plaintext echostr
        the desk must answer with."""
        echo = str(secrets.randbelow(10**19))
        encrypted = crypto.encrypt(echo)
        timestamp, nonce = str(int(self.now())), str(secrets.randbelow(10**9))
        query = {
            "msg_signature": crypto.sign(timestamp=timestamp, nonce=nonce, encrypted=encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": encrypted,
        }
        return query, echo

    # Internals (called with the lock held).

    def _session(self, open_kfid: str, external_userid: str) -> Session:
        return self._sessions.setdefault((open_kfid, external_userid), Session())

    def _append(self, *, origin: int, msgtype: str, body: dict, send_time: float, **ids) -> str:
        seq = next(self._seq)
        msgid = f"standin_msg_{seq}"
        item = {"msgid": msgid, "send_time": int(send_time), "origin": origin, "msgtype": msgtype}
        item.update({key: value for key, value in ids.items() if value})
        item[msgtype] = body
        self._log.append((seq, item))
        return msgid

    def _new_code(self) -> str:
        code = "CODE" + secrets.token_urlsafe(12)
        with self._lock:
            self._event_codes.add(code)
        return code

    @staticmethod
    def _error(errcode: int, errmsg: str) -> dict:
        return {"errcode": errcode, "errmsg": errmsg}

    # The API.

    def handle(self, path: str, query: dict, body: dict | None) -> dict:
        with self._lock:
            if path == "/cgi-bin/gettoken":
                return self._gettoken(query)
            self.calls.append((path, body if isinstance(body, dict) else {}))
            token = query.get("access_token", "")
            if token not in self._tokens:
                return self._error(40014, "invalid access_token")
            if self._tokens[token] <= self.now():
                return self._error(42001, "access_token expired")
            if not isinstance(body, dict):
                return self._error(47001, "data format error")
            handlers = {
                "/cgi-bin/kf/sync_msg": self._sync_msg,
                "/cgi-bin/kf/send_msg": self._send_msg,
                "/cgi-bin/kf/send_msg_on_event": self._send_msg_on_event,
                "/cgi-bin/kf/service_state/get": self._state_get,
                "/cgi-bin/kf/service_state/trans": self._state_trans,
            }
            handler = handlers.get(path)
            if handler is None:
                return self._error(404, "no such API in the stand-in")
            return handler(body)

    def _gettoken(self, query: dict) -> dict:
        if query.get("corpid") != self.corp_id:
            return self._error(40013, "invalid corpid")
        if query.get("corpsecret") != self.corp_secret:
            return self._error(40001, "invalid credential")
        self.token_requests += 1
        now = self.now()
        for token, expiry in self._tokens.items():
            if expiry > now:  # WeCom: the same token while it is valid
                remaining = int(expiry - now)
                return {
                    "errcode": 0,
                    "errmsg": "ok",
                    "access_token": token,
                    "expires_in": remaining,
                }
        token = "AT" + secrets.token_urlsafe(32)
        self._tokens[token] = now + self.token_ttl
        return {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.token_ttl}

    def _sync_msg(self, body: dict) -> dict:
        token = body.get("token")
        if token is not None and self._sync_tokens.get(token, 0) <= self.now():
            return self._error(95007, "invalid msg token")
        limit = body.get("limit", 1000)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            return self._error(40058, "invalid limit")
        cursor = body.get("cursor") or ""
        if self.empty_page_next:
            self.empty_page_next = False
            empty = {"next_cursor": cursor, "has_more": 1, "msg_list": []}
            return {"errcode": 0, "errmsg": "ok", **empty}
        after = int(cursor[3:]) if cursor.startswith("CUR") and cursor[3:].isdigit() else 0
        if cursor and not after:
            return self._error(40058, "invalid cursor")
        oldest = self.now() - HISTORY_SECONDS
        open_kfid = body.get("open_kfid")
        items = [
            (seq, item)
            for seq, item in self._log
            if seq > after
            and item["send_time"] >= oldest
            and (not open_kfid or _open_kfid(item) == open_kfid)
        ]
        page = items[:limit]
        last = page[-1][0] if page else after
        return {
            "errcode": 0,
            "errmsg": "ok",
            "next_cursor": f"CUR{last}" if last else "",
            "has_more": 1 if len(items) > limit else 0,
            "msg_list": [item for _seq, item in page],
        }

    def _send_msg(self, body: dict) -> dict:
        self.send_calls += 1
        if self.send_calls in self.send_failures:
            return self._error(self.send_failures[self.send_calls], "failure on demand")
        open_kfid, touser, msgtype = body.get("open_kfid"), body.get("touser"), body.get("msgtype")
        if not open_kfid or not touser or msgtype not in ("text", "msgmenu"):
            return self._error(40058, "invalid parameter")
        if msgtype == "text" and not body.get("text", {}).get("content"):
            return self._error(40058, "empty text")
        session = self._session(open_kfid, touser)
        if session.state not in (0, 1):
            return self._error(95018, "send msg session status invalid")
        if session.last_customer_at is None or self.now() >= (
            session.last_customer_at + WINDOW_SECONDS
        ):
            return self._error(95002, "send msg time limit")
        if session.sent_since >= MAX_REPLIES:
            return self._error(95001, "send msg count limit")
        session.sent_since += 1
        msgid = body.get("msgid") or f"standin_sent_{len(self.sent) + 1}"
        self.sent.append({**body, "msgid": msgid})
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def _send_msg_on_event(self, body: dict) -> dict:
        code = body.get("code")
        if code not in self._event_codes:
            return self._error(40058, "invalid code")
        self._event_codes.discard(code)  # a code is good for one message
        msgid = body.get("msgid") or f"standin_sent_{len(self.sent) + 1}"
        self.sent.append({**body, "msgid": msgid})
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def _state_get(self, body: dict) -> dict:
        session = self._session(body.get("open_kfid", ""), body.get("external_userid", ""))
        answer = {"errcode": 0, "errmsg": "ok", "service_state": session.state}
        if session.state == 3:
            answer["servicer_userid"] = session.servicer_userid
        return answer

    def _state_trans(self, body: dict) -> dict:
        session = self._session(body.get("open_kfid", ""), body.get("external_userid", ""))
        target = body.get("service_state")
        if target not in ALLOWED_MOVES.get(session.state, set()):
            return self._error(95016, "service state transition not allowed")
        servicer = body.get("servicer_userid", "")
        if target == 3 and servicer not in self.servicers:
            return self._error(95014, "servicer not active")
        before, session.state = session.state, target
        session.servicer_userid = servicer if target == 3 else ""
        answer = {"errcode": 0, "errmsg": "ok"}
        # A code for one message: entering the queue, taken from the queue, ending.
        if target == 2 or target == 4 or (target == 3 and before == 2):
            code = "CODE" + secrets.token_urlsafe(12)
            self._event_codes.add(code)
            answer["msg_code"] = code
        return answer


class _Server(http.server.ThreadingHTTPServer):
    # Many concurrent callers connect at once (the token test): the default backlog of 5
    # would reset some of their connections.
    request_queue_size = 128


def _open_kfid(item: dict) -> str:
    return item.get("open_kfid") or item.get("event", {}).get("open_kfid", "")
