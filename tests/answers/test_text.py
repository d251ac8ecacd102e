import json
import sys
import unicodedata

import pytest

from agents.forms import NoteForm, ReplyForm, TicketCreateForm
from chat.frames import ErrorCode
from chat.protocol import FrameError, client_id_of, connect_params, parse_client_frame
from chat.text import TextError, clean_text, is_visible, scrub

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl: one emoji
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"  # tag sequence
KEYCAP_ONE = "1\ufe0f\u20e3"
RAINBOW_FLAG = "\U0001f3f3\ufe0f\u200d\U0001f308"


def code_of(value: str, **kwargs) -> str:
    with pytest.raises(TextError) as exc:
        clean_text(value, **kwargs)
    assert exc.value.message
    return exc.value.code


@pytest.mark.parametrize(
    "text",
    [
        "Where is my order?",
        "我的订单在哪里？",
        "Hello 你好 مرحبا שלום привет",
        "I love it \U0001f60d\U0001f44d",
        FAMILY,
        f"Family: {FAMILY}, flags: {ENGLAND} {RAINBOW_FLAG}, keycap {KEYCAP_ONE}",
        "\U0001f44b\U0001f3fd",  # a skin tone modifier
        "line one\nline two\ttabbed",
        "\u05e9\u05dc\u05d5\u05dd\u200f!",  # Hebrew with a right-to-left mark: kept
        "\u200fשלום",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian with a zero-width non-joiner
        "x" * 10,
    ],
)
def test_real_text_is_kept_as_typed(text):
    assert clean_text(text) == text


def test_surrounding_white_space_is_trimmed_and_inner_kept():
    assert clean_text("  \n hello  world \t\n") == "hello  world"
    assert clean_text("\u3000你好\u3000") == "你好"  # ideographic space


def test_line_endings_become_line_feeds():
    assert clean_text("a\r\nb\rc\u2028d\u2029e\x85f") == "a\nb\nc\nd\ne\nf"


def test_text_is_nfc_normalised():
    decomposed = "Cafe\u0301 \u1100\u1161"  # e + combining acute; Hangul jamo
    cleaned = clean_text(decomposed)
    assert cleaned == "Café 가" == unicodedata.normalize("NFC", decomposed)


@pytest.mark.parametrize(
    "value",
    [
        "x\ud800",
        "\udfff",
        "\ud83d",
        "emoji half \ud83d and more",
        "\udc00\ud800",
    ],
)
def test_lone_surrogates_are_refused(value):
    assert code_of(value) == ErrorCode.BAD_FRAME


@pytest.mark.parametrize(
    "char", ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x80", "\x9b"]
)
def test_control_characters_are_refused(char):
    assert code_of(f"a{char}b") == ErrorCode.BAD_FRAME
    with pytest.raises(TextError, match=f"U\\+{ord(char):04X}"):  # the message names it
        clean_text(f"a{char}b")


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "\n\t \n",
        "\u200b",
        "\u200b\u200c\u200d",
        "\ufeff",
        "\u2060",
        "\u00ad",
        "\u200e\u200f",
        "\u202e",
        "\u2066\u2069",
        "\u3000",
        "\u00a0",
        "\u3164",
        "\u115f\u1160",
        "\u2800",
        "\ufe0f",
        "\U000e0067",
        "\u034f",
        "  \u200b \ufeff \u200d  ",
    ],
)
def test_nothing_visible_is_an_empty_message(value):
    assert code_of(value) == ErrorCode.EMPTY_MESSAGE
    assert clean_text(value, required=False) == ""


def test_refusals_name_the_field():
    with pytest.raises(TextError, match="comment"):
        clean_text("\x1b[31m", field="comment")


def test_too_long_counts_characters_after_cleaning():
    assert clean_text("  " + "好" * 10 + "  ", max_chars=10) == "好" * 10
    assert code_of("好" * 11, max_chars=10) == ErrorCode.MESSAGE_TOO_LONG
    assert clean_text(FAMILY, max_chars=5) == FAMILY  # five code points


def test_single_line_fields_collapse_breaks_and_runs_of_space():
    assert clean_text(" Kim \r\n  Lee\t", single_line=True) == "Kim Lee"


def test_unassigned_code_points_count_as_visible():
    # Emoji newer than this Python's Unicode tables are unassigned to it, not invisible.
    unassigned = next(
        chr(c) for c in range(0x1FAE0, 0x1FB00) if unicodedata.category(chr(c)) == "Cn"
    )
    assert clean_text(unassigned) == unassigned


def test_invisibility_agrees_with_unicode_default_ignorables():
    """Every default-ignorable or white-space character (Unicode's own list, from the regex
    package where it is installed) counts as invisible."""
    regex = pytest.importorskip("regex")
    ignorable = regex.compile(r"[\p{Default_Ignorable_Code_Point}\p{White_Space}]")
    missed = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF
        and unicodedata.category(chr(c)) != "Cn"
        and ignorable.match(chr(c))
        and is_visible(chr(c))
    ]
    assert missed == []


def test_scrub_drops_what_cannot_be_stored_from_metadata():
    assert scrub(" Berlin\x00\x1b[0m\ud800 \r\n") == "Berlin[0m"
    assert scrub("Mu\u0308nchen") == "München"


# --- The customer socket's frames use it for every text field -------------------------------


def parse(frame: dict | str, max_chars: int = 4000) -> dict:
    text = frame if isinstance(frame, str) else json.dumps(frame)
    return parse_client_frame(text, None, max_bytes=16384, max_chars=max_chars)


def frame_code(frame: dict | str) -> str:
    with pytest.raises(FrameError) as exc:
        parse(frame)
    return exc.value.code


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message", "text": "x\ud800"},
        {"type": "message", "text": "hi", "client_id": "c\ud800"},
        {"type": "feedback", "message_id": 1, "rating": "up", "comment": "bad\udfff"},
        {"type": "csat", "score": 3, "comment": "\ud83d"},
        {"type": "contact", "email": "kim@example.com", "name": "Kim\ud800"},
        {"type": "contact", "email": "kim\ud800@example.com"},
        {"type": "message", "text": "a\x00b"},
        {"type": "message", "text": "\x1b[2J"},
        {"type": "csat", "score": 5, "comment": "great\x07"},
        {"type": "contact", "email": "kim@example.com\x00"},
        {"type": "contact", "email": "k" * 250 + "@example.com"},
    ],
)
def test_unstorable_text_in_any_field_is_a_bad_frame(frame):
    # json.dumps writes a lone surrogate as the escape "\ud800", as a hostile client would.
    assert frame_code(frame) == ErrorCode.BAD_FRAME


@pytest.mark.parametrize("message_id", [0, -1, -(2**70), 2**63, 10**30])
def test_feedback_on_an_id_no_row_can_have_is_an_unknown_message(message_id):
    # docs/protocol.md: any whole number that is no bot answer of the conversation.
    frame = {"type": "feedback", "message_id": message_id, "rating": "up"}
    assert frame_code(frame) == ErrorCode.UNKNOWN_MESSAGE


@pytest.mark.parametrize("message_id", ['"2"', "2.5", "true", "null"])
def test_feedback_with_a_message_id_that_is_no_whole_number_is_a_bad_frame(message_id):
    frame = '{"type": "feedback", "rating": "up", "message_id": ' + message_id + "}"
    assert frame_code(frame) == ErrorCode.BAD_FRAME


@pytest.mark.parametrize("text", ["\u200b", "\ufeff\u200d", "\u3164", " \u2800 ", "\u200f"])
def test_an_invisible_message_is_empty(text):
    assert frame_code({"type": "message", "text": text}) == ErrorCode.EMPTY_MESSAGE


def test_message_text_is_stored_cleaned():
    frame = parse({"type": "message", "text": " Cafe\u0301\r\n" + FAMILY + " ", "client_id": "c1"})
    assert frame["text"] == "Café\n" + FAMILY


def test_comments_and_names_may_be_empty_but_not_fake():
    assert parse({"type": "csat", "score": 4, "comment": "\u200b "})["comment"] == ""
    assert (
        parse({"type": "feedback", "message_id": 3, "rating": "down", "comment": " 不对\r\n"})[
            "comment"
        ]
        == "不对"
    )
    frame = parse({"type": "contact", "email": " kim@example.com ", "name": "\u3164"})
    assert (frame["email"], frame["name"]) == ("kim@example.com", "")
    frame = parse(
        {"type": "contact", "email": "kim@example.com", "name": " Kim\n Lee " + "x" * 300}
    )
    assert frame["name"].startswith("Kim Lee x") and len(frame["name"]) == 200


def test_too_long_comment():
    with pytest.raises(FrameError) as exc:
        parse({"type": "csat", "score": 2, "comment": "x" * 1001})
    assert exc.value.code == ErrorCode.MESSAGE_TOO_LONG


@pytest.mark.parametrize(
    ("text_data", "expected"),
    [
        ('{"type": "message", "text": "", "client_id": "c-1"}', "c-1"),
        ('{"type": "message", "text": "", "client_id": "c\\ud800"}', None),
        ('{"type": "message", "text": "", "client_id": "c\\u001b"}', None),
        ('{"type": "message", "text": "", "client_id": 7}', None),
        ('{"type": "message", "text": "", "client_id": "' + "x" * 65 + '"}', None),
        ("[1]", None),
        ("not json", None),
        ("", None),
    ],
)
def test_a_refusal_echoes_only_a_client_id_that_can_be_sent_back(text_data, expected):
    assert client_id_of(text_data, max_bytes=1000) == expected


def test_connect_metadata_is_scrubbed():
    scope = {
        "query_string": b"region=Berlin%00%1B%5B0m&tz=Europe%2FBerlin%0D%0A",
        "headers": [(b"user-agent", b"Bot\x00/1.0")],
    }
    params = connect_params(scope)
    assert (params.region, params.timezone, params.user_agent) == (
        "Berlin[0m",
        "Europe/Berlin",
        "Bot/1.0",
    )


# --- The console's forms use it for what agents write ----------------------------------------


def test_agent_reply_is_cleaned_like_a_customer_message():
    form = ReplyForm({"text": " Hello\r\nCafe\u0301 " + FAMILY + " "})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["text"] == "Hello\nCafé " + FAMILY


@pytest.mark.parametrize("text", ["\u200b\u200b", "a\x1bb", "\u3164", "x" * 8001])
def test_agent_reply_refuses_invisible_or_control_text(text):
    assert not ReplyForm({"text": text}).is_valid()
    assert not NoteForm({"text": text}).is_valid()


def test_ticket_subject_is_one_line():
    form = TicketCreateForm({"subject": " Parcel\r\n lost ", "priority": "normal"})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["subject"] == "Parcel lost"
