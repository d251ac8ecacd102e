"""What the customer wrote this time: a reply without the quoted history under it and without
the signature. mail-parser-reply finds the quote headers of many languages ("On … wrote:",
"Am … schrieb:", Outlook's From:/Sent: blocks) and signatures; Chinese mail clients' own
headers ("在 2026年12月6日 … 写道：", Foxmail's and QQ Mail's "原始邮件" separator) and the
plain "-- " signature line are cut here first, since the library misses them."""

import re

from mailparser_reply.parser import EmailMessage

LANGUAGES = ["en", "zh", "de", "fr", "es", "it", "nl", "pt", "ja"]

_CUTS = (
    # Gmail, Apple Mail and others in Chinese: 在 <date>，<name> <addr> 写道：
    re.compile(r"^\s*(?:>\s*)*在.{1,300}?(?:写道|寫道)\s*[:：]\s*$", re.M),
    # Foxmail, QQ Mail, NetEase: ------------------ 原始邮件 ------------------
    re.compile(r"^\s*-{2,}\s*(?:原始邮件|原始郵件|Original Message)\s*-{2,}\s*$", re.M | re.I),
    # Outlook in Chinese: a 发件人:/寄件者: line followed by 发送时间:/日期:
    re.compile(
        r"^\s*(?:发件人|寄件者)\s*[:：].*\n\s*(?:发送时间|寄件日期|日期|时间)\s*[:：]", re.M
    ),
    # The signature delimiter (RFC 3676): "-- " alone on a line.
    re.compile(r"^-- ?$", re.M),
)


def latest_reply(text: str) -> str:
    """The newest part of an e-mail body, stripped of quoted history and signature."""
    text = text.replace("\r\n", "\n")
    for cut in _CUTS:
        match = cut.search(text)
        if match:
            text = text[: match.start()]
    # Hyphen lists ("- a refund") are the customer's words, not an Outlook-style signature.
    parsed = EmailMessage(text=text, languages=list(LANGUAGES), keep_hyphen_lists=True).read()
    reply = parsed.replies[0].body if parsed.replies else text
    return reply.strip() or text.strip()
