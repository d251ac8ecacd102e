"""One check for every piece of text a person types into the desk (customer messages,
comments, contact details, the console's replies and notes) before it is stored.

Browsers and hostile clients can send what no keyboard produces: a lone UTF-16 surrogate
(`"\\ud800"` in JSON decodes to a Python string that cannot be encoded as UTF-8, so storing it
fails), NUL (PostgreSQL refuses it in text columns) and other control characters (terminal
escapes in logs and exports), or a "message" made only of invisible characters (zero-width
spaces, a BOM, Hangul fillers) that would be stored and answered as if it said something.

`clean_text` refuses those with the customer socket's error codes and otherwise returns the
text as it will be stored: line endings as `\\n`, NFC-normalised (so the same words typed on
two systems compare and search alike), surrounding white space trimmed. Everything else is
kept as typed: emoji with zero-width joiners, variation selectors and tags, right-to-left
marks, zero-width non-joiners in Persian, any script.

Only the standard library's `unicodedata` is used, so the web side needs no extra package.
"""

import re
import unicodedata

from chat.frames import ErrorCode


class TextError(ValueError):
    """Refused text: `code` is the customer socket's error code, `message` says what to fix."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# Every line break a client may send: CRLF (HTML forms submit textareas with it), CR, NEL,
# and Unicode's line and paragraph separators.
_LINE_BREAKS = re.compile("\r\n|[\r\x85\u2028\u2029]")
# Control characters other than tab and line feed: C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Categories drawn as nothing: white space, separators, controls, formatting characters
# (zero-width space and joiners, BOM, bidi marks, tags) and surrogates.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs"})
# Characters that also render as nothing although Unicode files them as letters, marks or
# symbols (most are Default_Ignorable_Code_Point); they are the usual way to fake an empty
# message or name. They stay in text that has something visible (variation selectors belong
# to emoji), but never count as the visible part.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors
    (0x2800, 0x2800),  # Braille pattern blank
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
)


# Formatting characters that are drawn: the prepended concatenation marks (the Arabic number
# sign, the end of ayah, …) that carry the digits that follow.
_VISIBLE_FORMAT = frozenset(
    "\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
)


def is_visible(char: str) -> bool:
    """Whether the character draws something. Unassigned code points count as visible: they
    may be characters (new emoji) of a Unicode version newer than this Python's."""
    code = ord(char)
    if any(low <= code <= high for low, high in _INVISIBLE_RANGES):
        return False
    return unicodedata.category(char) not in _INVISIBLE_CATEGORIES or char in _VISIBLE_FORMAT


def has_visible(text: str) -> bool:
    return any(is_visible(char) for char in text)


def clean_text(
    value: str,
    *,
    field: str = "message",
    max_chars: int | None = None,
    required: bool = True,
    single_line: bool = False,
) -> str:
    """`value` as it will be stored, or TextError.

    - `bad_frame`: a lone surrogate, or a control character other than tab and line feed;
    - `empty_message` (only when `required`): nothing visible, only white space or invisible
      characters; when not required such text becomes "";
    - `message_too_long`: over `max_chars` characters once cleaned.

    `field` names the text in error messages ("message", "comment", "name"). With
    `single_line`, line breaks and tabs become spaces (names, e-mail addresses, subjects).
    """
    if (match := _SURROGATE.search(value)) is not None:
        raise TextError(
            ErrorCode.BAD_FRAME,
            f"The {field} contains an invalid character (a lone UTF-16 surrogate, "
            f"U+{ord(match.group()):04X}); send it as proper UTF-8 text.",
        )
    text = _LINE_BREAKS.sub("\n", value)
    if (match := _CONTROL.search(text)) is not None:
        raise TextError(
            ErrorCode.BAD_FRAME,
            f"The {field} contains a control character (U+{ord(match.group()):04X}); "
            "only text, line breaks and tabs are accepted.",
        )
    text = unicodedata.normalize("NFC", text)
    if single_line:
        text = " ".join(text.split())
    text = text.strip()
    if not has_visible(text):
        if required:
            raise TextError(ErrorCode.EMPTY_MESSAGE, f"The {field} is empty.")
        return ""
    if max_chars is not None and len(text) > max_chars:
        raise TextError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"The {field} is limited to {max_chars} characters; this one has {len(text)}.",
        )
    return text


def scrub(value: str) -> str:
    """Metadata that is recorded but never refused (region, time zone, page, User-Agent):
    surrogates and control characters are dropped, the rest NFC-normalised."""
    text = _SURROGATE.sub("", _CONTROL.sub("", _LINE_BREAKS.sub(" ", value)))
    return unicodedata.normalize("NFC", text).strip()
