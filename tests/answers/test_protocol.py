import json
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
from typing_extensions import is_typeddict

from chat import frames
from chat.consumers import ChatConsumer, frame_handler_name
from chat.frames import ErrorCode
from chat.protocol import FrameError, connect_params, parse_client_frame

ROOT = Path(__file__).resolve().parents[2]


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
        ('{"type": "message", "text": "x\\ud800"}', ErrorCode.BAD_FRAME),  # a lone surrogate
        ('{"type": "message", "text": "a\\u001bb"}', ErrorCode.BAD_FRAME),
        ('{"type": "message", "text": "\\u200b\\ufeff\\u200d"}', ErrorCode.EMPTY_MESSAGE),
        ('{"type": "csat", "score": 4, "comment": "\\udfff"}', ErrorCode.BAD_FRAME),
        ('{"type": "contact", "email": "kim@example.com", "name": "\\ud800"}', ErrorCode.BAD_FRAME),
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


# --- Client frame types: one schema, one handler, one line of docs each ------------------------


def _schema_types() -> set[str]:
    """The `type` of every client-frame schema chat.frames defines (a TypedDict with a `type`
    field), whether or not it made it into the ClientFrame union."""
    return {
        type_
        for schema in vars(frames).values()
        if is_typeddict(schema) and "type" in get_type_hints(schema)
        for type_ in get_args(get_type_hints(schema)["type"])
    }


def test_every_client_frame_schema_is_accepted_and_nothing_else():
    assert len(frames.CLIENT_FRAME_TYPES) == len(set(frames.CLIENT_FRAME_TYPES))
    assert set(frames.CLIENT_FRAME_TYPES) == _schema_types()
    assert {"message", "ping", "handoff.request", "contact"} <= _schema_types()


def test_every_client_frame_type_has_a_consumer_handler_and_every_handler_a_type():
    for frame_type in frames.CLIENT_FRAME_TYPES:
        assert callable(getattr(ChatConsumer, frame_handler_name(frame_type), None)), frame_type
    handlers = {name for name in vars(ChatConsumer) if name.startswith("_on_")}
    assert handlers == {frame_handler_name(t) for t in frames.CLIENT_FRAME_TYPES}


def test_every_client_frame_type_is_documented():
    protocol_md = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    client_section = protocol_md.split("### Client → server", 1)[1].split("\n## ", 1)[0]
    for frame_type in frames.CLIENT_FRAME_TYPES:
        assert f"**`{frame_type}`**" in client_section, frame_type


def test_connect_params_read_query_and_headers():
    scope = {
        "query_string": b"lang=zh-CN&region=Shanghai&tz=Asia%2FShanghai&page=https%3A%2F%2Fshop.example%2Fcart",
        "headers": [(b"user-agent", b"Browser/1.0"), (b"accept-language", b"fr-FR,fr;q=0.9")],
    }
    params = connect_params(scope)
    assert (params.language, params.region, params.timezone) == (
        "zh-CN",
        "Shanghai",
        "Asia/Shanghai",
    )
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
    assert (
        connect_params(
            {"query_string": b"", "headers": [(b"accept-language", b"fr-FR,fr")]}
        ).language
        == "fr-FR"
    )


# --- Daphne's WebSocket protocol with the frame bound (runtime.wsframes) ----------------------


class _Queue(list):
    put_nowait = list.append


def _bounded_protocol(max_bytes: int):
    from runtime.wsframes import BoundedWebSocketProtocol

    protocol = BoundedWebSocketProtocol()
    protocol.max_message_bytes = max_bytes
    # What autobahn and Daphne set up on a connection, as far as receiving a message needs.
    protocol.application_queue = _Queue()
    protocol.client_addr = None
    protocol.failedByMe = False
    protocol.websocket_version = 13
    protocol.trackedTimings = None
    return protocol


def _receive(protocol, frames: list[bytes], *, binary: bool = False, chunk: int = 64) -> int:
    """Feed one message as autobahn does (frame by frame, chunk by chunk); the most bytes
    the protocol held at any time."""
    held = 0
    protocol.onMessageBegin(binary)
    for frame in frames:
        protocol.onMessageFrameBegin(len(frame))
        for start in range(0, len(frame), chunk):
            protocol.onMessageFrameData(frame[start : start + chunk])
            held = max(
                held, sum(map(len, protocol.frame_data)) + sum(map(len, protocol.message_data))
            )
        protocol.onMessageFrameEnd()
    protocol.onMessageEnd()
    return held


def test_an_oversized_message_is_cut_while_it_arrives_and_still_refused_as_too_large():
    limit = 1000
    protocol = _bounded_protocol(limit + 4)
    text = json.dumps({"type": "message", "text": "好" * 100_000}, ensure_ascii=False)
    held = _receive(protocol, [text.encode()[:150_000], text.encode()[150_000:]])
    assert held <= limit + 4
    [event] = protocol.application_queue
    stand_in = event["text"]  # decoded: the cut inside a character was dropped
    assert limit < len(stand_in.encode()) <= limit + 4 and text.startswith(stand_in)
    assert code_of(text=stand_in, max_bytes=limit) == ErrorCode.FRAME_TOO_LARGE


def test_messages_within_the_bound_pass_whole_and_the_cut_does_not_carry_over():
    protocol = _bounded_protocol(104)
    _receive(protocol, [b"x" * 5000])
    exact = ("好" * 34).encode() + b"xx"  # 104 bytes: the bound itself
    _receive(protocol, [exact[:50], exact[50:]])
    _receive(protocol, [b"\x00\x01" * 10], binary=True)
    events = protocol.application_queue
    assert len(events[0]["text"]) == 104
    assert events[1] == {"type": "websocket.receive", "text": exact.decode()}
    assert events[2] == {"type": "websocket.receive", "bytes": b"\x00\x01" * 10}


def test_installing_the_bound_twice_changes_only_the_limit():
    from daphne.ws_protocol import WebSocketFactory

    from runtime import wsframes

    before = wsframes.BoundedWebSocketProtocol.max_message_bytes
    try:
        wsframes.install(max_message_bytes=5000)
        wsframes.install(max_message_bytes=6000)
        assert WebSocketFactory.protocol is wsframes.BoundedWebSocketProtocol
        assert wsframes.BoundedWebSocketProtocol.max_message_bytes == 6000
        assert WebSocketFactory.protocol.__mro__[1].__name__ == "WebSocketProtocol"
    finally:
        wsframes.install(max_message_bytes=before)


def test_a_closed_socket_is_freed_without_waiting_for_a_full_garbage_collection():
    """A real Daphne with the collector off: the protocol, the HTTP channel and the request it
    was upgraded from are all gone once the client has closed (no reference cycle holds them)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.closed_sockets_left", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["opened"] == 20  # the count sees the protocols while they are open
    assert counts["left"] == {"BoundedWebSocketProtocol": 0, "HTTPChannel": 0, "WebRequest": 0}


def test_start_up_objects_are_frozen_after_start_ups_garbage_is_collected():
    script = """
import gc, weakref
from runtime.startup_objects import freeze_startup_objects

class Node:
    pass

garbage = Node(); garbage.self = garbage  # a cycle, unreachable once `del`eted
gone = weakref.ref(garbage); del garbage
kept = Node()
frozen = freeze_startup_objects()
print(frozen == gc.get_freeze_count() > 1000, gone() is None,
      all(kept is not o for o in gc.get_objects()))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Frozen: many objects; the garbage was freed, not frozen; live objects leave collections.
    assert result.stdout.split() == ["True", "True", "True"]
