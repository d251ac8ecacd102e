"""A verified customer on the customer socket, through the real ASGI router: the token in the
socket's URL, a fresh one as a `customer.token` frame, refusals that leave the conversation
going unverified, and a resumed conversation whose verification has expired."""

import datetime as dt
import time

import pytest
from channels.db import database_sync_to_async

from chat import selectors, services
from chat.models import Conversation
from tests.conftest import stored_conversation
from tests.console.helpers import console_socket, make_user, receive_until, synced
from tests.customers.helpers import SHOP, make_site, sign

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = [(b"origin", SHOP.encode())]


@pytest.fixture
async def site():
    return await database_sync_to_async(make_site)()


async def open_widget(connect, site, *, token: str = "", resume: dict | None = None):
    query = f"site={site.key}"
    if resume is not None:
        query += f"&conversation={resume['id']}&token={resume['token']}"
    if token:
        query += f"&customer_token={token}"
    return await connect(query, headers=HEADERS)


async def still_open(client) -> None:
    await client.send({"type": "ping"})
    assert await client.receive() == {"type": "pong"}


async def row(conversation_id) -> Conversation:
    return await Conversation.objects.aget(pk=conversation_id)


async def test_a_token_in_the_url_verifies_the_new_conversation(connect, site):
    exp = int(time.time()) + 600
    token = sign(site.identity_secret, "cust-42", name="Ada", email="ada@example.com", exp=exp)
    client, first = await open_widget(connect, site, token=token)
    assert first["type"] == "conversation" and "token" in first  # still the first frame
    verified = await client.receive()
    expires_at = dt.datetime.fromtimestamp(exp, dt.UTC)
    assert verified == {
        "type": "customer.verified",
        "customer_id": "cust-42",
        "expires_at": expires_at.isoformat(),
    }
    # Nothing said yet, so no row: the draft carries the customer to the stored conversation.
    conversation = await stored_conversation(first)
    stored = await row(conversation.pk)
    assert (stored.customer_id, stored.customer_name, stored.customer_email) == (
        "cust-42",
        "Ada",
        "ada@example.com",
    )
    assert stored.customer_verified_until == expires_at
    customer = await database_sync_to_async(selectors.verified_customer)(
        conversation_id=conversation.pk
    )
    assert customer.id == "cust-42"


@pytest.mark.parametrize(
    ("make_token", "code", "words"),
    [
        (lambda site: sign("another-secret-" * 3), "customer_token_invalid", "signature"),
        (
            lambda site: sign(site.identity_secret, expires_in=-3600),
            "customer_token_expired",
            "fresh",
        ),
        (lambda site: "x" * 5000, "customer_token_invalid", "4096 bytes"),
        (lambda site: "not-a-jwt", "customer_token_invalid", "malformed"),
        (lambda site: sign(site.identity_secret, sub=None), "customer_token_invalid", "`sub`"),
    ],
    ids=["wrong secret", "expired", "oversized", "malformed", "no sub"],
)
async def test_a_refused_token_in_the_url_leaves_the_chat_going_unverified(
    connect, site, make_token, code, words
):
    client, first = await open_widget(connect, site, token=make_token(site))
    assert first["type"] == "conversation"
    error = await client.receive()
    assert error["type"] == "error" and error["code"] == code and words in error["message"]
    await still_open(client)
    await client.send({"type": "csat", "score": 4})  # stores the conversation
    assert await client.receive() == {"type": "csat.ack", "score": 4}
    stored = await row(first["id"])
    assert stored.customer_id == "" and stored.customer_verified_until is None


async def test_a_widget_of_a_site_without_a_secret_is_told_how_to_get_one(connect):
    site = await database_sync_to_async(make_site)(secret=False)
    client, first = await open_widget(connect, site, token=sign("x" * 43))
    error = await client.receive()
    assert error["code"] == "customer_token_invalid"
    assert "site_identity_secret" in error["message"]
    await still_open(client)


async def test_a_fresh_token_frame_renews_the_verification(connect, site):
    client, first = await open_widget(connect, site)
    await client.send({"type": "csat", "score": 5})
    await client.receive()  # the conversation is stored now
    assert (await row(first["id"])).customer_id == ""

    for minutes in (5, 60):
        exp = int(time.time()) + minutes * 60
        await client.send(
            {"type": "customer.token", "token": sign(site.identity_secret, "cust-42", exp=exp)}
        )
        verified = await client.receive()
        assert verified["type"] == "customer.verified" and verified["customer_id"] == "cust-42"
        stored = await row(first["id"])
        assert stored.customer_verified_until == dt.datetime.fromtimestamp(exp, dt.UTC)


async def test_a_token_for_another_customer_is_refused_and_changes_nothing(connect, site):
    secret = site.identity_secret
    client, first = await open_widget(connect, site, token=sign(secret, "cust-42", name="Ada"))
    await client.receive()  # customer.verified
    await client.send({"type": "customer.token", "token": sign(secret, "cust-99", name="Eve")})
    error = await client.receive()
    assert error["code"] == "customer_mismatch" and "another customer" in error["message"]
    await still_open(client)
    conversation = await stored_conversation(first)
    stored = await row(conversation.pk)
    assert (stored.customer_id, stored.customer_name) == ("cust-42", "Ada")
    assert (await row(conversation.pk)).customer_id == "cust-42"


async def test_another_customer_resuming_the_conversation_gets_no_history(connect, site):
    """Someone else signed in on the same browser: the stored conversation is refused them
    (close code 4404: the widget starts a new one), its history never sent."""
    secret = site.identity_secret
    client, first = await open_widget(connect, site, token=sign(secret, "cust-42"))
    await client.receive()  # customer.verified
    await client.send({"type": "csat", "score": 5})  # stored
    await client.receive()
    other, refused = await open_widget(connect, site, token=sign(secret, "cust-99"), resume=first)
    assert refused["type"] == "error" and refused["code"] == "customer_mismatch"
    assert "new conversation" in refused["message"]
    assert (await other.ws.receive_output())["code"] == 4404
    assert not any(frame["type"] == "history" for frame in other.frames)
    assert (await row(first["id"])).customer_id == "cust-42"
    # Their own new conversation is verified for them.
    mine, new = await open_widget(connect, site, token=sign(secret, "cust-99"))
    assert new["id"] != first["id"]
    assert (await mine.receive())["customer_id"] == "cust-99"


async def test_a_resumed_conversation_is_verified_only_until_its_token_expired(connect, site):
    client, first = await open_widget(
        connect, site, token=sign(site.identity_secret, "cust-42", name="Ada")
    )
    await client.receive()  # customer.verified
    conversation = await stored_conversation(first)
    await client.close()
    # Time passes: the verification ran out.
    await Conversation.objects.filter(pk=conversation.pk).aupdate(
        customer_verified_until=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )

    resumed_client, resumed = await open_widget(connect, site, resume=first)
    assert resumed["resumed"] is True
    assert (await resumed_client.receive())["type"] == "history"
    assert await resumed_client.nothing_more()  # no token, no verdict
    verified_now = database_sync_to_async(selectors.verified_customer)
    assert await verified_now(conversation_id=conversation.pk) is None
    stored = await row(conversation.pk)
    assert (stored.customer_id, stored.customer_name) == ("cust-42", "Ada")  # the record stays

    await resumed_client.send(
        {"type": "customer.token", "token": sign(site.identity_secret, "cust-42")}
    )
    assert (await resumed_client.receive())["type"] == "customer.verified"
    assert (await verified_now(conversation_id=conversation.pk)).id == "cust-42"


async def test_a_token_frame_before_the_first_message_is_kept_with_the_draft(connect, site):
    client, first = await open_widget(connect, site)
    await client.send({"type": "customer.token", "token": sign(site.identity_secret, "cust-7")})
    assert (await client.receive())["customer_id"] == "cust-7"
    assert not await Conversation.objects.filter(pk=first["id"]).aexists()
    # Another tab resumes the draft, and stores it: verified.
    _, resumed = await open_widget(connect, site, resume=first)
    conversation = await stored_conversation(first)
    assert (await row(conversation.pk)).customer_id == "cust-7"
    assert resumed["resumed"] is True


async def test_a_secret_made_while_the_socket_is_open_counts_at_once(connect, site):
    client, first = await open_widget(connect, site)
    fresh = await database_sync_to_async(services.site_identity_secret_renew)(site=site)
    await client.send({"type": "customer.token", "token": sign(fresh, "cust-1")})
    assert (await client.receive())["type"] == "customer.verified"


@pytest.mark.parametrize(
    "frame",
    [{"type": "customer.token"}, {"type": "customer.token", "token": 5}],
    ids=["no token", "not a string"],
)
async def test_a_malformed_token_frame_is_a_bad_frame(connect, site, frame):
    client, _ = await open_widget(connect, site)
    await client.send(frame)
    assert (await client.receive())["code"] == "bad_frame"
    await still_open(client)


async def test_contact_details_typed_later_do_not_replace_the_verified_ones(connect, site):
    client, first = await open_widget(
        connect, site, token=sign(site.identity_secret, "cust-42", name="Ada", email="ada@x.org")
    )
    await client.receive()  # customer.verified
    await client.send({"type": "handoff.request"})
    assert (await client.receive())["type"] == "handoff.ack"
    await client.send({"type": "contact", "email": "eve@evil.example", "name": "Eve"})
    assert await client.receive() == {"type": "contact.ack"}
    stored = await row(first["id"])
    assert (stored.customer_name, stored.customer_email) == ("Ada", "ada@x.org")


async def test_the_inbox_hears_that_a_stored_conversation_got_its_customer(
    connect, site, django_user_model
):
    ann = await database_sync_to_async(make_user)(django_user_model, "ann")
    console = await console_socket(ann)
    await synced(console)
    client, first = await open_widget(connect, site)
    await client.send({"type": "csat", "score": 5})  # stored, and the inbox told ("new")
    await client.receive()
    await client.send({"type": "customer.token", "token": sign(site.identity_secret, "cust-5")})
    assert (await client.receive())["type"] == "customer.verified"
    update = await receive_until(
        console, lambda f: f["type"] == "console.update" and f["reason"] == "customer"
    )
    assert update["conversation_id"] == first["id"]
    await console.disconnect()
