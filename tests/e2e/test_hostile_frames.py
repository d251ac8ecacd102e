"""Hostile frames against the real processes: Daphne as in production (cs_site.asgi, with its
frame bound), Redis, an inference worker on the synthetic token source, and a real WebSocket
client. Every frame gets its documented reply, the socket stays open, Daphne logs no
traceback, and oversized frames leave Daphne's memory where it was."""

import asyncio
import json
import random
import uuid

import pytest
import websockets
from django.conf import settings

from inference_worker.synthetic import SyntheticEngine
from runtime.wsframes import HARD_CEILING_BYTES
from tests.e2e.conftest import synthetic_daphne

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MAX_FRAME_BYTES = settings.CHAT["MAX_FRAME_BYTES"]
MAX_CHARS = settings.CHAT["MAX_MESSAGE_CHARS"]
FUZZ_FRAMES = 2000
BIG_FRAMES = 100
BIG_FRAME_BYTES = 2 * 1024 * 1024
# Frames that answer nothing else: everything a socket may receive unasked (bot answers,
# agents) is skipped when matching replies to frames.
UNASKED = {
    "bot.start",
    "bot.delta",
    "bot.done",
    "agent.joined",
    "agent.message",
    "agent.typing",
    "agent.left",
}


@pytest.fixture(scope="module")
def hostile_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    """A synthetic stack of its own with the flood limit relaxed: thousands of frames on one
    socket are the point here."""
    engine = SyntheticEngine(reply="Thanks, noted.", tokens_per_second=2000)
    with synthetic_daphne(
        "hostile", engine, tmp_path_factory, django_db_blocker, CHAT_SOCKET_RATE_LIMIT=""
    ) as stack:
        yield stack


async def open_chat(ws_url: str, origin: str):
    # max_size: the client must be able to read what it is sent, nothing more is asked of it.
    ws = await websockets.connect(
        f"{ws_url}/ws/chat/?lang=en",
        origin=origin,
        open_timeout=20,
        max_size=None,
        compression=None,
    )
    first = json.loads(await ws.recv())
    assert first["type"] == "conversation"
    return ws


async def next_reply(ws, timeout: float = 60) -> dict:
    """The next frame that answers something the client sent."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] not in UNASKED:
                return frame


async def ping_pong(ws) -> None:
    await ws.send('{"type": "ping"}')
    assert await next_reply(ws) == {"type": "pong"}


def assert_no_traceback(output: str) -> None:
    assert "Traceback" not in output, output[-8000:]
    assert "Exception inside application" not in output, output[-8000:]


# --- What a frame is, and what must answer it ------------------------------------------------

# Customer texts in several scripts; none asks for a human or says yes to an offer of one.
TEXTS = [
    "Where is my order 4711?",
    "我的订单在哪里？",
    "Mon colis est en retard.",
    "Заказ не пришёл",
    "طلبي لم يصل بعد",
    "\u05d4\u05d6\u05de\u05e0\u05d4 \u05e9\u05dc\u05d9\u200f?",
    "Delivery \U0001f69a\U0001f4e6 late \U0001f622",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467 family plan?",
    "Can I pay with \U0001f4b3?\nThanks\tin advance",
    "Cafe\u0301 au lait price",
    "keycap 1\ufe0f\u20e3 and flag \U0001f3f3\ufe0f\u200d\U0001f308",
]
INVISIBLE = [
    "\u200b",
    "\u200b\u200c\u200d",
    "\ufeff",
    " \u2060 ",
    "\u3164",
    "\u2800",
    "\u200e\u200f",
    "\n\t ",
    "\u00ad",
    "\u3000",
]
CONTROLS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x1b[2J", "\x7f", "\x9b"]
SURROGATES = ["\ud800", "\udfff", "\ud83d", "\ude00\ud83d"]


def dumps(frame) -> str:
    # ensure_ascii writes a lone surrogate as its JSON escape, as a hostile client would.
    return json.dumps(frame, ensure_ascii=True)


def fuzz_frames(rng: random.Random, count: int):
    """(frame to send, expected reply type, expected error code or None)."""
    used_client_ids: list[str] = []

    def client_id() -> str:
        if used_client_ids and rng.random() < 0.1:
            return rng.choice(used_client_ids)  # a resend: acknowledged as a duplicate
        used_client_ids.append(uuid.UUID(int=rng.getrandbits(128)).hex)
        return used_client_ids[-1]

    def nested(depth: int) -> str:
        return "[" * depth + "]" * depth

    bad_frame = [
        lambda: "not json",
        lambda: "{",
        lambda: '{"type": "message", "text": "unterminated',
        lambda: "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(1, 80))) + "{",
        lambda: "[1, 2, 3]",
        lambda: '"just a string"',
        lambda: "null",
        lambda: "12345",
        lambda: nested(rng.randrange(2000, 8000)),
        lambda: (
            '{"type": "message", "text": "x", "extra": ' + nested(rng.randrange(2000, 7000)) + "}"
        ),
        lambda: '{"type": "csat", "score": ' + "9" * rng.randrange(5000, 9000) + "}",
        lambda: '{"type": "csat", "score": 1e400}',
        lambda: '{"type": "csat", "score": NaN}',
        lambda: '{"type": "csat", "score": -Infinity}',
        lambda: dumps({"type": "csat", "score": rng.choice([0, 6, -1, 10**30])}),
        lambda: dumps({"type": "csat", "score": "5"}),
        lambda: dumps({"type": "csat", "score": 4.5}),
        lambda: dumps({"type": "csat", "score": True}),
        lambda: dumps(
            {"type": "feedback", "message_id": rng.choice([1.5, True, None]), "rating": "up"}
        ),
        lambda: dumps({"type": "feedback", "message_id": "12", "rating": "up"}),
        lambda: dumps({"type": "feedback", "message_id": 5, "rating": "meh"}),
        lambda: dumps({"type": "message"}),
        lambda: dumps({"type": "message", "text": rng.choice([42, None, [], {}, 1.5, True])}),
        lambda: dumps(
            {"type": "message", "text": "hi", "client_id": rng.choice([7, "", "x" * 65, "a\tb"])}
        ),
        lambda: dumps({"type": "message", "text": "hi" + rng.choice(SURROGATES) + "there"}),
        lambda: dumps({"type": "message", "text": rng.choice(SURROGATES)}),
        lambda: dumps({"type": "message", "text": "a" + rng.choice(CONTROLS) + "b"}),
        lambda: dumps({"type": "csat", "score": 3, "comment": "ok" + rng.choice(SURROGATES)}),
        lambda: dumps({"type": "csat", "score": 3, "comment": "ok" + rng.choice(CONTROLS)}),
        lambda: dumps(
            {
                "type": "feedback",
                "message_id": 1,
                "rating": "down",
                "comment": rng.choice(SURROGATES),
            }
        ),
        lambda: dumps(
            {"type": "contact", "email": "kim@example.com", "name": "K" + rng.choice(SURROGATES)}
        ),
        lambda: dumps(
            {"type": "contact", "email": "kim" + rng.choice(SURROGATES) + "@example.com"}
        ),
        lambda: dumps(
            {"type": "contact", "email": "kim@example.com", "name": "K" + rng.choice(CONTROLS)}
        ),
        lambda: dumps({"type": "contact", "email": "not an address"}),
        lambda: dumps({"type": "contact"}),
    ]
    generators = [
        (
            30,
            lambda: (
                dumps({"type": "message", "text": rng.choice(TEXTS), "client_id": client_id()}),
                "message.ack",
                None,
            ),
        ),
        (
            4,
            lambda: (
                json.dumps({"type": "message", "text": rng.choice(TEXTS)}, ensure_ascii=False),
                "message.ack",
                None,
            ),
        ),
        (30, lambda: (rng.choice(bad_frame)(), "error", "bad_frame")),
        (
            8,
            lambda: (
                dumps({"type": "message", "text": rng.choice(INVISIBLE), "client_id": client_id()}),
                "error",
                "empty_message",
            ),
        ),
        (
            3,
            lambda: (
                dumps({"type": "message", "text": "x" * (MAX_CHARS + rng.randrange(1, 50))}),
                "error",
                "message_too_long",
            ),
        ),
        (
            3,
            lambda: (
                dumps(
                    {"type": "message", "text": "x" * (MAX_FRAME_BYTES + rng.randrange(1, 5000))}
                ),
                "error",
                "frame_too_large",
            ),
        ),
        (
            6,
            lambda: (
                dumps(
                    rng.choice(
                        [
                            {"type": "launch"},
                            {"text": "no type"},
                            {"type": ["message"]},
                            {"type": None},
                            {"type": 7},
                            {"type": "message.ack"},
                            {"type": "PING"},
                            {"type": "ping\u0000"},
                        ]
                    )
                ),
                "error",
                "unknown_type",
            ),
        ),
        (
            6,
            lambda: (
                '{"type": "pin\\u0067"}' if rng.random() < 0.3 else '{"type": "ping"}',
                "pong",
                None,
            ),
        ),
        (
            3,
            lambda: (
                dumps(
                    {
                        "type": "csat",
                        "score": rng.randrange(1, 6),
                        "comment": rng.choice(["", "Quick, thanks.", "很好 \U0001f44d", "\u200b"]),
                    }
                ),
                "csat.ack",
                None,
            ),
        ),
        (
            3,
            lambda: (
                dumps(
                    {
                        "type": "feedback",
                        # Ids of no row, and whole numbers no row can have (docs/protocol.md).
                        "message_id": rng.choice(
                            [rng.randrange(10**9, 10**12), 0, -1, -(2**40), 2**63, 10**30]
                        ),
                        "rating": rng.choice(["up", "down"]),
                    }
                ),
                "error",
                "unknown_message",
            ),
        ),
        (
            2,
            lambda: (
                dumps(
                    {
                        "type": "contact",
                        "email": "kim@example.com",
                        "name": rng.choice(["Kim", "金", "\u3164", ""]),
                    }
                ),
                "contact.ack",
                None,
            ),
        ),
        (1, lambda: ('{"type": "handoff.request"}', "handoff.ack", None)),
        (3, lambda: ('{"type": "typing"}', None, None)),  # forwarded to agents; no reply
        (2, lambda: (b"\x00\xff binary", "error", "bad_frame")),
    ]
    weights = [w for w, _ in generators]
    makers = [m for _, m in generators]
    for _ in range(count):
        yield rng.choices(makers, weights)[0]()


async def test_a_socket_survives_thousands_of_hostile_frames(hostile_stack):
    ws = await open_chat(hostile_stack.ws, hostile_stack.http)
    rng = random.Random(20260110)
    frames = list(fuzz_frames(rng, FUZZ_FRAMES))
    replies: dict[str, int] = {}
    for index, (frame, expected, code) in enumerate(frames):
        await ws.send(frame)
        if expected is None:
            continue
        reply = await next_reply(ws)
        sent = frame if isinstance(frame, str) else repr(frame)
        assert reply["type"] == expected, (index, sent[:300], reply)
        if code is not None:
            assert reply["code"] == code, (index, sent[:300], reply)
            assert reply["message"]
        if expected == "message.ack":
            assert isinstance(reply["id"], int)
        key = f"{reply['type']}:{reply.get('code', '')}".rstrip(":")
        replies[key] = replies.get(key, 0) + 1
    await ping_pong(ws)  # still open, still answering
    assert ws.close_code is None
    await ws.close()
    print(f"{len(frames)} frames, replies: {dict(sorted(replies.items()))}")
    assert replies["message.ack"] > 300 and replies["error:bad_frame"] > 300
    assert_no_traceback(hostile_stack.output.getvalue())


async def test_oversized_frames_are_refused_on_an_open_socket_without_growing_memory(hostile_stack):
    ws = await open_chat(hostile_stack.ws, hostile_stack.http)
    # The largest legitimate frame passes whole: 4,000 emoji are 16,000 bytes.
    await ws.send(
        json.dumps(
            {"type": "message", "text": "\U0001f600" * MAX_CHARS, "client_id": "big"},
            ensure_ascii=False,
        )
    )
    assert (await next_reply(ws))["type"] == "message.ack"
    await ping_pong(ws)
    before = hostile_stack.rss_kib()
    # Valid JSON that would be a message if it were not too large, with multibyte characters
    # so the cut falls inside one.
    big = json.dumps({"type": "message", "text": "好" * (BIG_FRAME_BYTES // 3)}, ensure_ascii=False)
    assert len(big.encode()) > BIG_FRAME_BYTES - 100
    for _ in range(BIG_FRAMES):
        await ws.send(big)
        reply = await next_reply(ws)
        assert reply["type"] == "error" and reply["code"] == "frame_too_large", reply
    await ping_pong(ws)
    after = hostile_stack.rss_kib()
    assert ws.close_code is None
    await ws.close()
    print(
        f"Daphne RSS before {before / 1024:.1f} MiB, after {BIG_FRAMES} frames of "
        f"{BIG_FRAME_BYTES >> 20} MiB {after / 1024:.1f} MiB"
    )
    assert after - before < 30 * 1024
    assert_no_traceback(hostile_stack.output.getvalue())


async def test_what_the_websocket_layer_refuses_closes_with_its_code(hostile_stack):
    """Over autobahn's ceiling the connection is failed before the payload is read: a close
    frame 1009 (message too big), then the TCP connection closes. Text that is not UTF-8 gets
    1007. Daphne carries on, its memory where it was."""
    before = hostile_stack.rss_kib()
    for payload, code in [
        ("x" * (HARD_CEILING_BYTES + 1), 1009),
        (b'{"type": "message", "text": "\xed\xa0\x80"}', 1007),
    ]:
        ws = await open_chat(hostile_stack.ws, hostile_stack.http)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.send(payload, text=True)
            await next_reply(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    ws = await open_chat(hostile_stack.ws, hostile_stack.http)
    await ping_pong(ws)
    await ws.close()
    assert hostile_stack.rss_kib() - before < 30 * 1024
    assert_no_traceback(hostile_stack.output.getvalue())


async def test_production_limits_refuse_bad_text_and_big_frames_on_an_open_socket(synthetic_stack):
    """The same with Daphne exactly as configured by default (flood limit included)."""
    http = synthetic_stack.http
    ws = await open_chat(http.replace("http://", "ws://"), http)
    for frame, code in [
        (dumps({"type": "message", "text": "x\ud800", "client_id": "s1"}), "bad_frame"),
        (dumps({"type": "csat", "score": 5, "comment": "\udfff"}), "bad_frame"),
        (dumps({"type": "contact", "email": "kim@example.com", "name": "\ud800"}), "bad_frame"),
        (
            dumps({"type": "message", "text": "\u200b\u200d\ufeff", "client_id": "z1"}),
            "empty_message",
        ),
        (dumps({"type": "message", "text": "\x1b[2J"}), "bad_frame"),
        ("x" * BIG_FRAME_BYTES, "frame_too_large"),
        (
            json.dumps({"type": "message", "text": "好" * 400_000}, ensure_ascii=False),
            "frame_too_large",
        ),
    ]:
        await ws.send(frame)
        reply = await next_reply(ws)
        assert (reply["type"], reply["code"]) == ("error", code), reply
        if frame.startswith('{"type": "message"') and "client_id" in frame:
            assert reply["client_id"] in ("s1", "z1")  # the widget stops resending it
    await ws.send(
        json.dumps({"type": "message", "text": "Still here \U0001f44b", "client_id": "ok"})
    )
    assert (await next_reply(ws))["type"] == "message.ack"
    await ping_pong(ws)
    await ws.close()


async def test_a_refused_message_with_an_unsendable_client_id_keeps_the_socket(hostile_stack):
    """A refusal names the refused message's client_id, except one that cannot be sent back
    (a lone surrogate has no UTF-8 form): the reply must still go out."""
    ws = await open_chat(hostile_stack.ws, hostile_stack.http)
    for frame in [
        {"type": "message", "text": "x\ud800", "client_id": "\udc00"},
        {"type": "message", "text": "\u200b", "client_id": "c\ud800"},
        {"type": "message", "text": "hi", "client_id": "\ud83d"},
    ]:
        await ws.send(dumps(frame))
        reply = await next_reply(ws)
        assert reply["type"] == "error" and reply.get("client_id") is None, reply
    await ping_pong(ws)
    await ws.close()
    assert_no_traceback(hostile_stack.output.getvalue())


async def test_one_address_cannot_open_more_conversations_than_its_limit(
    django_db_blocker, tmp_path_factory
):
    """In Redis, across reconnects: the fourth socket from one address within the minute is
    told to wait and closed with 4429, and no conversation row is made for it."""
    from chat.models import Conversation

    engine = SyntheticEngine(reply="Hi.")
    with synthetic_daphne(
        "limited",
        engine,
        tmp_path_factory,
        django_db_blocker,
        CHAT_IP_CONVERSATION_LIMIT="3/minute",
    ) as stack:
        before = await Conversation.objects.acount()
        for _ in range(3):
            ws = await open_chat(stack.ws, stack.http)
            await ws.close()
        async with websockets.connect(f"{stack.ws}/ws/chat/", origin=stack.http) as ws:
            refusal = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert refusal["code"] == "rate_limited" and 0 < refusal["retry_after"] <= 60
        assert closed.value.rcvd.code == 4429
        # Nothing was said on the three accepted sockets either: no rows at all (a new
        # conversation is stored with its first message).
        assert await Conversation.objects.acount() == before
        assert_no_traceback(stack.output.getvalue())
