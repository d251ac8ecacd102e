"""When the desk may send a WeChat customer a message through kf/send_msg, and why not.

WeCom's rules ("发送消息", https://developer.work.weixin.qq.com/document/path/94677):

- Only after the customer has written: within 48 hours of the customer's message the company
  may send at most 5 messages; when the customer writes again, the count and the 48 hours
  start again from that message ("仅当微信客户在主动发送消息给客服后的48小时内，企业可发送消息
  给客户，最多可发送5条消息；若用户继续发送消息，企业可再次下发消息").
  WeCom refuses a 6th message with errcode 95001 ("发送客服消息次数限制", in the global error
  codes of the customer-service docs, mirrored at
  https://www.kancloud.cn/wikizhima/wechatkf-api/2376708) and a message after the 48 hours
  with 95002 ("发送客服消息时间限制").
- Only while the session is "new, untreated" (0) or "with the smart assistant" (1): once a
  servicer has it (3), it waits in the queue (2) or it has ended (4), the API may not send
  (errcode 95018, "send msg session status invalid"). Session states: "分配客服会话",
  https://developer.work.weixin.qq.com/document/path/94669.

The 48 hours are taken as a half-open interval: a message exactly 48 hours after the customer's
is refused, so a clock a little ahead of WeCom's never sends one WeCom would refuse.

Pure: the caller keeps the last customer message's time and the count sent since, in its own
store, and asks before each send.
"""

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

MAX_REPLIES = 5
REPLY_WINDOW = timedelta(hours=48)
# Session states in which kf/send_msg is allowed (0 untreated, 1 with the smart assistant).
SENDABLE_STATES = frozenset({0, 1})


class Refusal(enum.StrEnum):
    """Why a message may not go now."""

    NO_CUSTOMER_MESSAGE = "no_customer_message"  # the customer has not written yet
    WINDOW_CLOSED = "window_closed"  # 48 hours have passed since the customer's last message
    QUOTA_USED = "quota_used"  # 5 messages already went since the customer's last message
    NOT_WITH_BOT = "not_with_bot"  # a servicer, the queue, or an ended session holds it


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    refusal: Refusal | None = None
    remaining: int = 0  # messages that may still go in this window (this one included)
    closes_at: datetime | None = None  # when the window ends, if one is open


@dataclass(frozen=True)
class ReplyWindow:
    """What the rule needs to know of one customer on one customer-service account."""

    last_customer_message_at: datetime | None = None
    sent_since: int = 0

    def customer_wrote(self, at: datetime) -> "ReplyWindow":
        """After a customer message at `at`: a new window with a fresh count (an older or
        replayed message never shortens it)."""
        if self.last_customer_message_at is not None and at <= self.last_customer_message_at:
            return self
        return ReplyWindow(last_customer_message_at=at, sent_since=0)

    def sent(self) -> "ReplyWindow":
        """After one message has gone out."""
        return replace(self, sent_since=self.sent_since + 1)

    def closes_at(self) -> datetime | None:
        if self.last_customer_message_at is None:
            return None
        return self.last_customer_message_at + REPLY_WINDOW

    def verdict(self, *, now: datetime, service_state: int | None = None) -> Verdict:
        """May one more message go at `now`? `service_state`, when known (service_state/get
        or the session events), is checked too."""
        closes_at = self.closes_at()
        if closes_at is None:
            return Verdict(allowed=False, refusal=Refusal.NO_CUSTOMER_MESSAGE)
        if now >= closes_at:
            return Verdict(allowed=False, refusal=Refusal.WINDOW_CLOSED, closes_at=closes_at)
        remaining = MAX_REPLIES - self.sent_since
        if remaining <= 0:
            return Verdict(allowed=False, refusal=Refusal.QUOTA_USED, closes_at=closes_at)
        if service_state is not None and service_state not in SENDABLE_STATES:
            return Verdict(
                allowed=False,
                refusal=Refusal.NOT_WITH_BOT,
                remaining=remaining,
                closes_at=closes_at,
            )
        return Verdict(allowed=True, remaining=remaining, closes_at=closes_at)
