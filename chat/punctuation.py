"""Full-width punctuation for Chinese answers: "你好,请稍等." → "你好，请稍等。".

Small models often write ASCII punctuation in Chinese prose. Only punctuation that follows
Chinese text is changed; code (`inline` and ``` fences), URLs, e-mail addresses, numbers
(3.14, 1,000) and Latin words keep theirs.

It works on a stream: `feed` returns what is certain so far and holds back a trailing run of
punctuation or backticks until the next character (or `finish`) decides it, so the customer
sees the same text streamed as is stored.
"""

import re

import regex

_FULL = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；", "(": "（", ")": "）"}
_HELD = set(_FULL) | {"`"}
_URL_START = re.compile(r"(https?://|www\.|[\w.+-]+@)", re.IGNORECASE)


# \p{Han} follows Unicode: every CJK ideograph block, extensions B-I (U+20000 and up, rare
# characters of names and places) and compatibility ideographs included, where hand-written
# ranges went stale. Punctuation is not Han: its blocks are listed as before.
_CJK = regex.compile(r"[\p{Han}\u3000-\u303F\uFF00-\uFFEF\u2026]")


def is_cjk(char: str) -> bool:
    return _CJK.fullmatch(char) is not None


class FullwidthPunctuation:
    def __init__(self) -> None:
        self.raw = ""  # everything fed
        self.done = 0  # raw[:done] is decided and returned
        self.prev_out = ""  # the last character returned
        self.in_fence = False
        self.in_code = False
        self.open_parens = 0  # "（" opened and not yet closed
        self.word_start = 0  # raw index where the current URL-able word began

    def feed(self, delta: str) -> str:
        self.raw += delta
        end = len(self.raw)
        while end > self.done and self.raw[end - 1] in _HELD:
            end -= 1
        return self._decide(end)

    def finish(self) -> str:
        return self._decide(len(self.raw))

    def _decide(self, end: int) -> str:
        """Return raw[done:end] converted. Callers stop short of a trailing run of held
        characters unless the stream has ended, so every decision sees the next character."""
        out = []
        raw = self.raw
        i = self.done
        while i < end:
            char = raw[i]
            if raw.startswith("```", i):
                self.in_fence = not self.in_fence
                out.append("```")
                i += 3
                continue
            if char == "`" and not self.in_fence:
                self.in_code = not self.in_code
            elif char.isspace() or is_cjk(char):
                self.word_start = i + 1
            converted = char
            if char in _FULL and not (self.in_fence or self.in_code):
                if char == "." and raw.startswith("...", i) and is_cjk(self.prev_out or " "):
                    out.append("……")
                    self.prev_out = "…"
                    i += 3
                    continue
                converted = self._convert(char, i)
            out.append(converted)
            self.prev_out = converted
            i += 1
        self.done = max(self.done, i)
        return "".join(out)

    def _convert(self, char: str, i: int) -> str:
        raw = self.raw
        nxt = raw[i + 1] if i + 1 < len(raw) else ""
        if _URL_START.search(raw[self.word_start : i + 1]):
            return char  # inside a URL or e-mail address
        if char == ")":
            if self.open_parens:
                self.open_parens -= 1
                return _FULL[char]
            return char
        after_cjk = bool(self.prev_out) and is_cjk(self.prev_out)
        if char == "(":
            if after_cjk or (nxt and is_cjk(nxt)):
                self.open_parens += 1
                return _FULL[char]
            return char
        if not after_cjk:
            return char
        # "中文.com" or "共3.5": a Latin letter or digit right after is not the end of prose.
        if char in ".,:" and nxt and (nxt.isascii() and nxt.isalnum()):
            return char
        return _FULL[char]


def to_fullwidth(text: str) -> str:
    converter = FullwidthPunctuation()
    return converter.feed(text) + converter.finish()
