"""What an answer's text may not do, whatever the model: loop, or run past its length.

Small models (and sometimes large ones) repeat themselves until the token limit, or write on
past the length a customer reads. The worker checks every chunk as it streams: a loop or an
overrun stops the request in the engine at once, and the text is cut back to where it was
still an answer (before the loop, at a sentence boundary, never mid-word).

Pure functions and one small class: no Django, no engine. The web side (chat.guards) uses the
same script counting for its language check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import regex

# --- scripts ------------------------------------------------------------------------------------

_HAN = regex.compile(r"\p{Han}")
_WORD = regex.compile(r"[\p{L}\p{N}--\p{Han}][\p{L}\p{N}'’\-._/@--\p{Han}]*", regex.V1)
# Words with a letter: numbers are written alike in every language.
_LETTER_WORD = regex.compile(r"[\p{L}--\p{Han}][\p{L}\p{N}'’\-._/@--\p{Han}]*", regex.V1)


def han_count(text: str) -> int:
    return len(_HAN.findall(text))


def word_count(text: str) -> int:
    """Words of scripts written with spaces (Chinese characters are counted apart)."""
    return len(_WORD.findall(text))


def letter_word_count(text: str) -> int:
    """Words with a letter in them (numbers are written alike in every language)."""
    return len(_LETTER_WORD.findall(text))


def han_share(text: str) -> float | None:
    """Chinese characters among all letters of `text`; None when it has no letters at all.
    Latin letters count a word at a time, so a brand name in a Chinese sentence ("PayPal")
    weighs as much as one character, not six."""
    han = han_count(text)
    words = letter_word_count(text)
    if han + words == 0:
        return None
    return han / (han + words)


# --- length -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerLimit:
    """The longest answer a customer gets: words of spaced scripts and Chinese characters,
    counted apart (a mixed answer is over when either is)."""

    words: int
    han: int

    def exceeded_by(self, text: str) -> bool:
        return word_count(text) > self.words or han_count(text) > self.han

    def fit(self, text: str) -> str:
        """The longest head of `text` within the limit (at most the text itself)."""
        if not self.exceeded_by(text):
            return text
        words = han = 0
        end = 0
        for match in regex.finditer(
            r"\p{Han}|[\p{L}\p{N}--\p{Han}][\p{L}\p{N}'’\-._/@--\p{Han}]*", text, regex.V1
        ):
            if _HAN.fullmatch(match.group()):
                han += 1
            else:
                words += 1
            if words > self.words or han > self.han:
                break
            end = match.end()
        return text[:end]


# A sentence ends at . ! ? (followed by a space, a line break or the end) or at a Chinese full
# stop, or at a line break (list items and table rows end there).
# At the very end of a cut text, a full stop after a digit may be a decimal point ("3.2").
_SENTENCE_END = re.compile(r"(?:[.!?…](?=\s)|(?<!\d)[.!?…]$|[。！？]|\n)[\"'”’)）」]*")
# Clause ends, for a single long sentence: commas, semicolons, colons.
_CLAUSE_END = re.compile(r"[,;:，；：、](?=\s|$|\S)")


def cut_at_sentence(text: str) -> str:
    """`text` ended at its last complete sentence. A text with no complete sentence is cut
    after its last clause or word, with an ellipsis, never mid-word."""
    stripped = text.rstrip()
    ends = list(_SENTENCE_END.finditer(stripped))
    if ends:
        return stripped[: ends[-1].end()].rstrip()
    clauses = list(_CLAUSE_END.finditer(stripped))
    if clauses and clauses[-1].start() > 0:
        head = stripped[: clauses[-1].start()]
    else:
        head = stripped
        if not _HAN.search(head[-1:] or ""):
            # Back to the last space, so no word is cut in half (the caller may have cut
            # inside one).
            space = head.rfind(" ")
            head = head[:space] if space > 0 else head
    head = head.rstrip(" ,;:，；：、-–—")
    return head + ("…" if head and not _SENTENCE_END.search(head[-1:]) else "")


# --- loops --------------------------------------------------------------------------------------

_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


def _normalised(text: str) -> str:
    # Numbers are one symbol and spaces one space: "Zephyr-8 has 2 years. Zephyr-10 has 2
    # years." repeats itself as much as the same sentence three times does.
    return _SPACES.sub(" ", _DIGITS.sub("0", text))


# A loop's repeated stretch is at most this long (a sentence or two), and the text it repeats
# is at least this long in all: "ha ha ha" or a row of dashes is not a loop.
_MAX_PERIOD = 250
_MIN_SPAN = {"han": 24, "spaced": 60}


# Whether the text ends in a loop depends on its last 3 * _MAX_PERIOD normalised characters
# (three rounds of the longest stretch), so a stream's every chunk is checked on a window
# of its end: checking the whole answer each time cost the worker time that grew with the
# square of the answer's length. This many characters normalise to more than that unless
# they are mostly digits and spaces; then the window doubles until they do.
_WINDOW = 4 * _MAX_PERIOD


def loop_start(text: str) -> int | None:
    """Where a loop begins in `text` (an index into it), or None when there is none.
    Decided on the end of the text; where the loop begins is then found in all of it."""
    size = _WINDOW
    while size < len(text):
        window = text[-size:]
        # A run of digits or spaces that the window cuts normalises to one more symbol at its
        # start than in the whole text; the rest is the whole text's normalised end.
        norm = _normalised(window)
        if len(norm) > 3 * _MAX_PERIOD + 1:
            if _loop_start(window, norm) is None:
                return None
            break
        size *= 2  # mostly digits and spaces: a longer window
    return _loop_start(text)


def _loop_start(text: str, norm: str | None = None) -> int | None:
    """Where a loop begins in `text` (an index into it), or None when there is none.

    A loop is a stretch said again and again at the end of the text: its last characters (at
    least three rounds, and at least 60 characters, 24 in Chinese) repeat with one period,
    whatever the stretch's first character. Only the end of the text is checked, as the worker
    checks while the answer streams: a loop is caught as soon as it is long enough.

    Numbers count as one symbol, so "Zephyr-8 has 2 years. Zephyr-10 has 3 years. Zephyr-11 …"
    loops as much as one sentence said three times, but only when the stretch says something
    (three words, or four Chinese characters): "A1001, A1002, A1003 …" or "word1 word2 word3 …"
    is a list, not a loop. The loop begins at the stretch's second round; what came before it
    was said once. `norm`: `text` normalised, when the caller has it."""
    if norm is None:
        norm = _normalised(text)
    size = len(norm)
    span = _MIN_SPAN["han" if (han_share(norm[-60:]) or 0) > 0.5 else "spaced"]
    for period in range(1, min(_MAX_PERIOD, size // 3) + 1):
        length = max(3 * period, span)
        # The last character said `period` characters earlier too: a cheap first test that
        # most periods fail, before two slices of up to 750 characters are compared.
        if length > size or norm[size - 1] != norm[size - 1 - period]:
            continue
        if norm[size - length + period :] != norm[size - length : size - period]:
            continue
        # The smallest period: is that stretch said word for word, or only alike in numbers?
        if not _repeats_exactly(text, period, length) and not _says_something(
            norm[size - period :]
        ):
            return None
        first = size - length  # the periodic end may reach further back
        while first > 0 and norm[first - 1] == norm[first - 1 + period]:
            first -= 1
        return _original_index(text, first + period)
    return None


def _repeats_exactly(text: str, period: int, length: int) -> bool:
    """The end of `text` repeats with `period` as written, numbers and all (spaces as one)."""
    spaced = _SPACES.sub(" ", text)
    end = len(spaced)
    return length <= end and spaced[end - length + period :] == spaced[end - length : end - period]


def _says_something(stretch: str) -> bool:
    return letter_word_count(stretch) >= 3 or han_count(stretch) >= 4


def _original_index(text: str, norm_index: int) -> int:
    """The index in `text` whose normalised prefix has `norm_index` characters."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high) // 2
        if len(_normalised(text[:middle])) < norm_index:
            low = middle + 1
        else:
            high = middle
    return low


# A character no word (of `_WORD`) contains: the text before it and after it count apart.
_WORD_BREAK = regex.compile(r"[^\p{L}\p{N}'’\-._/@]|\p{Han}", regex.V1)


def _last_word_break(text: str, start: int) -> int:
    """The end of the last word break in text[start:] (an index into text), or `start`."""
    for index in range(len(text) - 1, start - 1, -1):
        if _WORD_BREAK.match(text, index):
            return index + 1
    return start


class StreamGuard:
    """Watches one answer as it streams. `feed(text)` returns None while the answer may go
    on, or the finish reason that stops it ("repetition", "length"); `kept()` is then the
    text the customer keeps."""

    REPETITION, LENGTH = "repetition", "length"

    def __init__(self, *, loops: bool, limit: AnswerLimit | None):
        self.loops = loops
        self.limit = limit
        self.text = ""
        self.reason: str | None = None
        self._kept: str | None = None
        # The text up to _counted ends where no word can go on; its words and Chinese
        # characters are counted once, and each chunk counts only what came after.
        self._counted = 0
        self._words = 0
        self._han = 0

    def feed(self, text: str) -> str | None:
        if self.reason is not None:
            return self.reason
        self.text += text
        if self.loops:
            start = loop_start(self.text)
            if start is not None:
                self.reason = self.REPETITION
                self._kept = cut_at_sentence(self.text[:start])
                return self.reason
        if self.limit is not None and self._over_limit():
            self.reason = self.LENGTH
            self._kept = cut_at_sentence(self.limit.fit(self.text))
            return self.reason
        return None

    def _over_limit(self) -> bool:
        """`limit.exceeded_by(self.text)`, counting each part of the text once."""
        text, start = self.text, self._counted
        end = _last_word_break(text, start)
        if end > start:
            settled = text[start:end]
            self._words += word_count(settled)
            self._han += han_count(settled)
            self._counted = end
        rest = text[self._counted :]
        return (
            self._words + word_count(rest) > self.limit.words
            or self._han + han_count(rest) > self.limit.han
        )

    def finished(self, finish_reason: str | None) -> str | None:
        """The engine ended the answer. Returns the text kept when a guard cut it and it
        differs from what streamed, else None. An answer the engine ended at max_tokens is
        left as it is: the answer limit above ends answers long before the profile's ceiling,
        and a caller who asks for fewer tokens gets exactly what it asked for."""
        return self.kept()

    def kept(self) -> str | None:
        """The text to keep when a guard cut the answer and it differs from the streamed."""
        if self._kept is None or self._kept == self.text:
            return None
        return self._kept
