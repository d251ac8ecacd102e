"""What staff see of a verified customer: the console's conversation view and admin's
transcript list and page name the customer and whether the verification still holds, with
everything the company's back end sent escaped."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from chat import services
from chat.customers import VerifiedCustomer
from chat.models import Conversation
from tests.console.helpers import client_for, make_user

pytestmark = pytest.mark.django_db

HOSTILE_NAME = '<img src=x onerror="alert(1)">Ada'


def verified(*, customer_id="cust-42", name=HOSTILE_NAME, email="ada@example.com", hours=1):
    conversation, _ = services.conversation_start()
    customer = VerifiedCustomer(
        id=customer_id,
        name=name,
        email=email,
        expires_at=timezone.now() + dt.timedelta(hours=hours),
    )
    services.customer_verify(conversation=conversation, customer=customer)
    return conversation


def expire(conversation: Conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(
        customer_verified_until=timezone.now() - dt.timedelta(hours=2)
    )


@pytest.fixture
def staff(django_user_model):
    return client_for(make_user(django_user_model, "ann"))


def pane(client, conversation) -> str:
    response = client.get(reverse("agents:conversation", args=[conversation.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_console_names_the_verified_customer_and_that_it_is_current(staff):
    conversation = verified(customer_id="<b>cust-42</b>")
    page = pane(staff, conversation)
    assert "Verified customer:" in page and "current until" in page
    assert "&lt;b&gt;cust-42&lt;/b&gt;" in page and "<b>cust-42</b>" not in page
    assert "&lt;img src=x" in page and "<img src=x" not in page
    assert "ada@example.com" in page


def test_the_console_says_when_the_verification_has_expired(staff):
    conversation = verified(name="Ada")
    expire(conversation)
    page = pane(staff, conversation)
    assert "Verified customer:" in page and "cust-42" in page
    assert "verified--expired" in page and "current until" not in page


def test_the_console_says_so_when_nobody_was_verified(staff):
    conversation, _ = services.conversation_start()
    page = pane(staff, conversation)
    assert "Verified customer:" not in page and "Not verified" in page


def test_admin_lists_and_shows_the_verified_customer(admin_client):
    current = verified(customer_id="cust-42")
    stale = verified(customer_id="cust-43", name="Bo", email="")
    expire(stale)
    plain, _ = services.conversation_start()

    listing = admin_client.get("/admin/chat/conversation/").content.decode()
    assert "Verified customer: cust-42 · &lt;img src=x" in listing
    assert "<img src=x" not in listing
    assert "Verified customer: cust-43 · Bo (expired" in listing

    page = admin_client.get(
        reverse("admin:chat_conversation_change", args=[current.pk])
    ).content.decode()
    assert "Verified customer: cust-42" in page and "(current until" in page
    assert "<img src=x" not in page
    page = admin_client.get(
        reverse("admin:chat_conversation_change", args=[plain.pk])
    ).content.decode()
    assert "Verified customer: " not in page  # the field's label only, with "—"


def test_admin_finds_a_conversation_by_its_customer_id(admin_client):
    mine = verified(customer_id="cust-42")
    verified(customer_id="cust-420")
    response = admin_client.get("/admin/chat/conversation/?q=cust-42")
    assert [c.pk for c in response.context["cl"].result_list] == [mine.pk]
