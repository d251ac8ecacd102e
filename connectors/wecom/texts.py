"""Cutting an answer into texts kf/send_msg takes: at most 2048 bytes of UTF-8 each ("发送消息",
https://developer.work.weixin.qq.com/document/path/94677: text.content "最长不超过2048个字节"),
about 680 Chinese characters.

Cuts fall after a paragraph, else a line, else a sentence, else a space, in the second half of
the piece, and only then anywhere; the pieces joined give the text back exactly. Each piece is
one of the 5 messages the reply window allows (window.py), so the caller decides how many may
go.
"""

TEXT_MAX_BYTES = 2048
# Preferred ends of a piece, best first.
BREAKS = ("\n\n", "\n", "。", "！", "？", "!", "?", ". ", "；", ";", "，", ", ", " ")


def _fits(text: str, limit: int) -> int:
    """How many leading characters of `text` fit in `limit` bytes of UTF-8."""
    used = 0
    for index, char in enumerate(text):
        used += len(char.encode())
        if used > limit:
            return index
    return len(text)


def split_text(text: str, *, limit: int = TEXT_MAX_BYTES) -> list[str]:
    """`text` in pieces of at most `limit` bytes of UTF-8, cut where a reader expects it."""
    if limit < 4:
        raise ValueError("a piece must hold at least one character of UTF-8 (4 bytes)")
    pieces = []
    rest = text
    while len(rest.encode()) > limit:
        end = _fits(rest, limit)
        head = rest[:end]
        cut = end
        for mark in BREAKS:
            at = head.rfind(mark)
            if at >= end // 2:
                cut = at + len(mark)
                break
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces
