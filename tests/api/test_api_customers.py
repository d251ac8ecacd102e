"""The chat API's `customer` field: only a key with the "customers" scope may name one, the
session keeps its customer, and another customer for the same session is refused."""

import datetime as dt
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.utils import timezone

from chat import selectors
from chat.api import keys
from chat.models import ApiKey, ApiScope, Conversation, Message
from tests.api.helpers import chat, make_client

pytestmark = pytest.mark.django_db(transaction=True)

ADA = {"id": "cust-42", "name": "Ada Lovelace", "email": "ada@example.com"}


@pytest.fixture
async def vouching():
    return await make_client(scopes=(ApiScope.CHAT, ApiScope.CUSTOMERS))


async def test_a_key_without_the_customers_scope_may_not_name_a_customer(worker):
    plain = await make_client()  # chat only
    response = await chat(plain, session_id="s1", user_input="Where is my order?", customer=ADA)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden" and error["field"] == "customer"
    assert "'customers' scope" in error["message"]
    # Refused before anything was stored: no session, no conversation, no message.
    assert await Conversation.objects.acount() == 0
    assert await Message.objects.acount() == 0
    # Without `customer` the same key chats as before.
    assert (await chat(plain, session_id="s1", user_input="Hello")).status_code == 200


async def test_the_customer_is_recorded_and_verified_for_the_configured_time(
    vouching, worker, settings
):
    settings.CUSTOMERS = {**settings.CUSTOMERS, "API_VERIFIED_SECONDS": 600}
    response = await chat(vouching, session_id="s1", user_input="Where is my order?", customer=ADA)
    assert response.status_code == 200, response.content
    conversation = await Conversation.objects.aget(pk=response.json()["conversation_id"])
    assert (
        conversation.customer_id,
        conversation.customer_name,
        conversation.customer_email,
    ) == ("cust-42", "Ada Lovelace", "ada@example.com")
    left = (conversation.customer_verified_until - timezone.now()).total_seconds()
    assert 590 < left <= 600
    customer = await sync_to_async(selectors.verified_customer)(conversation_id=conversation.pk)
    assert customer.id == "cust-42"


async def test_a_session_keeps_its_customer_and_refuses_another(vouching, worker):
    first = await chat(vouching, session_id="s1", user_input="Hi", customer=ADA)
    conversation_id = first.json()["conversation_id"]
    # A call without `customer` keeps the session's.
    plain = await chat(vouching, session_id="s1", user_input="And my invoice?")
    assert plain.status_code == 200
    # Another customer for the same session: refused, nothing stored.
    messages_before = await Message.objects.filter(conversation_id=conversation_id).acount()
    eve = {"id": "cust-99", "name": "Eve"}
    refused = await chat(vouching, session_id="s1", user_input="Show me the orders", customer=eve)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "conflict" and error["field"] == "customer.id"
    assert "new session_id" in error["message"]
    assert await Message.objects.filter(conversation_id=conversation_id).acount() == (
        messages_before
    )
    conversation = await Conversation.objects.aget(pk=conversation_id)
    assert (conversation.customer_id, conversation.customer_name) == ("cust-42", "Ada Lovelace")
    # The other customer gets a session of their own.
    other = await chat(vouching, session_id="s2", user_input="Show me the orders", customer=eve)
    assert other.status_code == 200 and other.json()["conversation_id"] != conversation_id


async def test_naming_the_customer_again_renews_the_verification(vouching, worker):
    first = await chat(vouching, session_id="s1", user_input="Hi", customer=ADA)
    conversation_id = first.json()["conversation_id"]
    expired = timezone.now() - dt.timedelta(minutes=1)
    await Conversation.objects.filter(pk=conversation_id).aupdate(customer_verified_until=expired)
    verified_now = sync_to_async(selectors.verified_customer)
    assert await verified_now(conversation_id=conversation_id) is None

    await chat(vouching, session_id="s1", user_input="Still me", customer={"id": "cust-42"})
    assert (await verified_now(conversation_id=conversation_id)).id == "cust-42"
    conversation = await Conversation.objects.aget(pk=conversation_id)
    assert conversation.customer_name == "Ada Lovelace"  # not given again: kept


@pytest.mark.parametrize(
    ("customer", "field"),
    [
        ({"name": "No id"}, "customer.id"),
        ({"id": ""}, "customer.id"),
        ({"id": " cust-42 "}, "customer.id"),
        ({"id": "x" * 201}, "customer.id"),
        ({"id": 42}, "customer.id"),
        ({"id": "cust-42", "email": "not-an-address"}, "customer.email"),
        ({"id": "cust-42", "nickname": "Ada"}, "customer.nickname"),
    ],
)
async def test_a_malformed_customer_is_named_and_nothing_is_stored(vouching, customer, field):
    response = await chat(vouching, session_id="s1", user_input="Hi", customer=customer)
    assert response.status_code in (400, 422), response.content
    assert response.json()["error"]["field"] == field
    assert await Conversation.objects.acount() == 0


def test_create_api_key_makes_a_key_with_the_customers_scope():
    out = StringIO()
    call_command("create_api_key", "--name", "shop", "--scopes", "chat,customers", stdout=out)
    secret = out.getvalue().splitlines()[-1]
    key = keys.key_for_secret(secret)
    assert key.scopes == ["chat", "customers"] and key.allows(ApiScope.CUSTOMERS)
    assert ApiKey.objects.get(pk=key.pk).scopes == ["chat", "customers"]


async def test_a_customers_key_without_the_chat_scope_cannot_chat(worker):
    only_customers = await make_client(scopes=(ApiScope.CUSTOMERS,))
    response = await chat(only_customers, session_id="s1", user_input="Hi", customer=ADA)
    assert response.status_code == 403 and "'chat' scope" in response.json()["error"]["message"]
