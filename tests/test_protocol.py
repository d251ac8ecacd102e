import json

import pytest

from chat.events import ErrorCode
from chat.protocol import FrameError, connect_params, parse_client_frame


def parse(text=None, raw=None, max_bytes=1000, max_chars=50):
    return parse_client_frame(text, raw, max_bytes=max_bytes, max_chars=max_chars)


def code_of(**kwargs) -> str:
    with pytest.raises(FrameError) as exc:
        parse(**kwargs)
    assert exc.value.message  # every refusal explains itself
    return exc.value.code


def test_message_frame_is_parsed_and_trimmed():
    frame = parse(json.dumps({"type": "message", "text": "  hello  ", "client_id": "c-1"}))
    assert frame == {"type": "message", "text": "hello", "client_id": "c-1"}


def test_client_id_is_optional_and_ping_is_accepted():
    assert parse('{"type": "message", "text": "hi"}') == {"type": "message", "text": "hi"}
    assert parse('{"type": "ping"}') == {"type": "ping"}


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", ErrorCode.BAD_FRAME),
        ("[1, 2]", ErrorCode.BAD_FRAME),
        ('"a string"', ErrorCode.BAD_FRAME),
        ('{"text": "no type"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "launch_missiles"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": ["message"]}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "message"}', ErrorCode.BAD_FRAME),
        ('{"type": "message", "text": 42}', ErrorCode.BAD_FRAME),
        ('{"type": "message", "text": "hi", "client_id": 7}', ErrorCode.BAD_FRAME),
        ('{"type": "message", "text": "hi", "client_id": ""}', ErrorCode.BAD_FRAME),
        ('{"type": "message", "text": "hi", "client_id": "' + "x" * 65 + '"}', ErrorCode.BAD_FRAME),
        ('{"type": "message", "text": "   \\n  "}', ErrorCode.EMPTY_MESSAGE),
        ('{"type": "message", "text": "' + "a" * 51 + '"}', ErrorCode.MESSAGE_TOO_LONG),
        ('{"type": "message", "text": "a\\u0000b"}', ErrorCode.BAD_FRAME),
        ("[" * 100000 + "]" * 100000, ErrorCode.FRAME_TOO_LARGE),
    ],
)
def test_bad_frames_get_a_code(text, code):
    assert code_of(text=text) == code


def test_deeply_nested_json_within_the_size_limit_is_refused_cleanly():
    assert code_of(text="[" * 5000 + "]" * 5000, max_bytes=20000) == ErrorCode.BAD_FRAME


def test_binary_frames_are_refused():
    assert code_of(raw=b"\x00\x01") == ErrorCode.BAD_FRAME


def test_size_limit_counts_bytes_not_characters():
    text = json.dumps({"type": "message", "text": "好" * 40}, ensure_ascii=False)
    assert len(text) < 100 < len(text.encode())
    assert code_of(text=text, max_bytes=100) == ErrorCode.FRAME_TOO_LARGE


def test_connect_params_read_query_and_headers():
    scope = {
        "query_string": b"lang=zh-CN&region=Shanghai&tz=Asia%2FShanghai&page=https%3A%2F%2Fshop.example%2Fcart",
        "headers": [(b"user-agent", b"Browser/1.0"), (b"accept-language", b"fr-FR,fr;q=0.9")],
    }
    params = connect_params(scope)
    assert (params.language, params.region, params.timezone) == ("zh-CN", "Shanghai", "Asia/Shanghai")
    assert params.page_url == "https://shop.example/cart"
    assert params.user_agent == "Browser/1.0"
    assert params.conversation_id == params.token == ""


def test_connect_params_fall_back_and_drop_hostile_values():
    scope = {
        "query_string": b"lang=%3Cscript%3E&page=javascript%3Aalert(1)",
        "headers": [(b"accept-language", b"fr-FR,fr;q=0.9")],
    }
    params = connect_params(scope)
    assert params.language == ""  # not a language tag: dropped, not stored
    assert params.page_url == ""
    assert connect_params({"query_string": b"", "headers": [(b"accept-language", b"fr-FR,fr")]}).language == "fr-FR"
