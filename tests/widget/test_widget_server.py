"""The widget's server side: site keys and origins, ratings, hand-off request, closing, and
full-width punctuation for Chinese answers, through the real ASGI router."""

import pytest
from channels.testing import WebsocketCommunicator

from chat.models import Conversation, Feedback, Message, Site, normalize_origin
from cs_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

SHOP = "https://shop.example.com"


@pytest.fixture
async def site():
    return await Site.objects.acreate(
        name="Shop", allowed_origins=f"{SHOP}\nhttp://localhost:5173", language="zh-CN"
    )


def origin(value: str) -> list:
    return [(b"origin", value.encode())]


async def test_widget_socket_from_an_allowed_origin_starts_a_site_conversation(
    connect, site, worker, engine
):
    engine.reply = lambda prompt: "您好！请问有什么可以帮您？"
    client, first = await connect(f"site={site.key}", headers=origin(SHOP))
    assert first["type"] == "conversation"
    await client.send({"type": "message", "text": "你们卖什么？", "client_id": "1"})
    await client.answer()
    conversation = await Conversation.objects.aget(pk=first["id"])
    assert conversation.site_id == site.pk
    assert conversation.language == "zh-CN"  # the site's default, no lang given
    (prompt,) = engine.prompts.values()
    assert "Company: Shop." in prompt and "Simplified Chinese" in prompt


@pytest.mark.parametrize("page_origin", ["https://evil.example", "http://shop.example.com", ""])
async def test_widget_socket_from_another_origin_is_refused_with_a_reason(site, page_origin):
    communicator = WebsocketCommunicator(
        application,
        f"/ws/chat/?site={site.key}",
        headers=origin(page_origin) if page_origin else [],
    )
    connected, _ = await communicator.connect()
    assert connected
    frame = await communicator.receive_json_from()
    assert frame["code"] == "origin_not_allowed" and "admin" in frame["message"]
    assert (await communicator.receive_output())["code"] == 4403
    assert await Conversation.objects.acount() == 0


async def test_unknown_or_inactive_site_key_is_refused(site):
    await Site.objects.filter(pk=site.pk).aupdate(is_active=False)
    for key in (site.key, "site_nope"):
        communicator = WebsocketCommunicator(
            application, f"/ws/chat/?site={key}", headers=origin(SHOP)
        )
        await communicator.connect()
        assert (await communicator.receive_json_from())["code"] == "origin_not_allowed"
        await communicator.wait()
    assert await Conversation.objects.acount() == 0


async def test_a_conversation_cannot_be_resumed_through_another_site(connect, site):
    other = await Site.objects.acreate(name="Other", allowed_origins="https://other.example")
    _, first = await connect(f"site={site.key}", headers=origin(SHOP))
    resume = f"conversation={first['id']}&token={first['token']}"
    _, refused = await connect(
        f"site={other.key}&{resume}", headers=origin("https://other.example")
    )
    assert refused["code"] == "conversation_not_found"
    _, refused = await connect(resume)  # nor without a site key, from the desk's own host
    assert refused["code"] == "conversation_not_found"
    _, resumed = await connect(f"site={site.key}&{resume}", headers=origin(SHOP))
    assert resumed["resumed"] is True


async def test_thumbs_are_stored_replaced_and_returned_in_history(connect, worker):
    client, first = await connect()
    await client.send({"type": "message", "text": "What do you sell?", "client_id": "1"})
    frames = await client.answer()
    answer_id = frames[-1]["message_id"]
    await client.send(
        {"type": "feedback", "message_id": answer_id, "rating": "down", "comment": " wrong answer "}
    )
    assert await client.receive() == {
        "type": "feedback.ack",
        "message_id": answer_id,
        "rating": "down",
    }
    await client.send({"type": "feedback", "message_id": answer_id, "rating": "up"})
    await client.receive()
    feedback = await Feedback.objects.aget(message_id=answer_id)
    assert (feedback.rating, feedback.comment) == ("up", "")
    again, _ = await connect(f"conversation={first['id']}&token={first['token']}")
    history = await again.receive()
    assert [m["rating"] for m in history["messages"]] == [None, "up"]


async def test_rating_a_customer_message_or_another_conversations_answer_is_refused(
    connect, worker
):
    client, _ = await connect()
    await client.send({"type": "message", "text": "What do you sell?", "client_id": "1"})
    frames = await client.answer()
    ack = frames[0]
    other, _ = await connect()
    for target, socket in ((ack["id"], client), (frames[-1]["message_id"], other)):
        await socket.send({"type": "feedback", "message_id": target, "rating": "up"})
        assert (await socket.receive())["code"] == "unknown_message"
    assert await Feedback.objects.acount() == 0


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "csat", "score": 0}, "bad_frame"),
        ({"type": "csat", "score": 6}, "bad_frame"),
        ({"type": "csat", "score": "5"}, "bad_frame"),
        ({"type": "csat", "score": 4, "comment": "x" * 1001}, "message_too_long"),
        ({"type": "feedback", "message_id": 1, "rating": "meh"}, "bad_frame"),
        ({"type": "feedback", "message_id": "1", "rating": "up"}, "bad_frame"),
    ],
)
async def test_malformed_ratings_are_refused(connect, frame, code):
    client, first = await connect()
    await client.send(frame)
    assert (await client.receive())["code"] == code
    # Refused before anything was stored: no rating, not even the conversation's row (a
    # rating that got through would have stored both).
    assert not await Conversation.objects.filter(pk=first["id"]).aexists()


async def test_close_then_csat_then_no_more_messages(connect):
    client, first = await connect()
    await client.send({"type": "close"})
    assert await client.receive() == {"type": "conversation.closed"}
    await client.send({"type": "csat", "score": 5, "comment": "很好"})
    assert await client.receive() == {"type": "csat.ack", "score": 5}
    conversation = await Conversation.objects.aget(pk=first["id"])
    assert (conversation.status, conversation.csat_score, conversation.csat_comment) == (
        "closed",
        5,
        "很好",
    )
    assert conversation.closed_at is not None and conversation.csat_at is not None
    await client.send({"type": "message", "text": "one more thing", "client_id": "x"})
    assert (await client.receive())["code"] == "conversation_closed"


async def test_handoff_request_is_recorded_once(connect):
    client, first = await connect()
    for _ in range(2):
        await client.send({"type": "handoff.request"})
        ack = await client.receive()
        # Nobody has a console open: the customer is asked how to follow up.
        assert ack == {
            "type": "handoff.ack",
            "status": "requested",
            "agents_available": False,
            "ask_contact": True,
            "business_hours": {},
        }
    conversation = await Conversation.objects.aget(pk=first["id"])
    assert conversation.handoff_requested_at is not None and conversation.status == "waiting"
    notes = [m async for m in Message.objects.filter(conversation=conversation, role="system")]
    assert len(notes) == 1


async def test_chinese_answers_get_fullwidth_punctuation_as_streamed_and_stored(
    connect, engine, worker
):
    engine.reply = lambda prompt: "您好,请提供订单号(例如A-1.5)谢谢!访问https://a.example/x,y."
    client, _ = await connect("lang=zh-CN")
    await client.send({"type": "message", "text": "我的订单呢", "client_id": "1"})
    frames = await client.answer()
    streamed = "".join(f["text"] for f in frames if f["type"] == "bot.delta")
    expected = "您好，请提供订单号（例如A-1.5）谢谢！访问https://a.example/x,y."
    assert streamed == expected
    assert (await Message.objects.aget(pk=frames[-1]["message_id"])).text == expected


async def test_english_answers_keep_their_punctuation(connect, engine, worker):
    engine.reply = lambda prompt: "您好,thanks!"
    client, _ = await connect("lang=en")
    await client.send({"type": "message", "text": "What do you sell?", "client_id": "1"})
    frames = await client.answer()
    assert "".join(f["text"] for f in frames if f["type"] == "bot.delta") == "您好,thanks!"


def test_widget_config_is_served_with_cors_only_to_allowed_origins(client, site):
    url = f"/widget/config/{site.key}"
    allowed = client.get(url, headers={"Origin": "http://localhost:5173"})
    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert allowed.json()["name"] == "Shop" and allowed.json()["accent_color"] == "#2563eb"
    refused = client.get(url, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "name" not in refused.json()
    assert refused.json()["error"] == "origin_not_allowed"
    assert client.get("/widget/config/site_nope").status_code == 404


def test_demo_page_is_there_only_when_turned_on(client, settings):
    settings.DEMO_PAGE = False  # the default: a production desk lends no one its GPU at /
    off = client.get("/")
    assert off.status_code == 404 and b"demo.js" not in off.content
    settings.DEMO_PAGE = True  # `make run`
    on = client.get("/")
    assert on.status_code == 200 and b"/static/chat/demo.js" in on.content


async def test_without_the_demo_page_only_widget_sockets_are_served(connect, site, settings):
    """Off (the production default), a socket without a site key gets no conversation: it
    would lend the model to anyone who can reach the desk. Nor is one resumed."""
    _, keyless = await connect()  # made while the demo page is on, as under `make run`
    settings.DEMO_PAGE = False
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=origin("http://127.0.0.1")
    )
    assert (await communicator.connect())[0]
    refused = await communicator.receive_json_from()
    assert refused["code"] == "origin_not_allowed" and "site key" in refused["message"]
    assert (await communicator.receive_output())["code"] == 4403
    _, resumed = await connect(f"conversation={keyless['id']}&token={keyless['token']}")
    assert resumed["code"] == "origin_not_allowed"
    _, widget = await connect(f"site={site.key}", headers=origin(SHOP))
    assert widget["type"] == "conversation"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("https://Shop.Example.com/", "https://shop.example.com"),
        ("https://shop.example.com:443", "https://shop.example.com"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("shop.example.com", ""),
        ("https://x.example:99999", ""),
    ],
)
def test_origins_are_normalized(raw, normal):
    assert normalize_origin(raw) == normal


def test_the_demo_pages_visitor_chats_as_the_sample_customer(client, settings):
    """With the sample shop on (as under `make run`), the page signs its visitor in as the
    sample customer; the token verifies only while the demo page is on."""
    import re

    from chat import customers

    settings.DEMO_PAGE = True
    settings.ACTIONS = {**settings.ACTIONS, "SAMPLE_SHOP": True}
    page = client.get("/").content.decode()
    token = re.search(r'data-customer-token="([^"]+)"', page).group(1)
    customer = customers.verify_token(token, site=None)
    assert customer.id == "c-1001" and customer.email == "ada@example.com"
    assert "A1001" in page and "Signed in as" in page
    settings.DEMO_PAGE = False  # production: no secret for key-less conversations
    with pytest.raises(customers.CustomerTokenError) as refused:
        customers.verify_token(token, site=None)
    assert refused.value.code == customers.CustomerTokenError.NO_SECRET
    settings.DEMO_PAGE = True
    settings.ACTIONS = {**settings.ACTIONS, "SAMPLE_SHOP": False}  # no sample: no sign-in
    assert "data-customer-token" not in client.get("/").content.decode()
