"""Every event the desk produces is queued by the service that causes it, in that service's
transaction, for the endpoints subscribed to it, and with the documented body."""

import json
import socket

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from agents import services as agent_services
from chat import handoff, services
from chat.actions import services as action_services
from chat.actions.models import ActionCall
from chat.actions.outcome import Outcome
from chat.models import Site
from tests.actions.helpers import make_action
from tests.webhooks.helpers import Receiver, free_port
from webhooks.events import EVENTS
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


def queued(endpoint=None) -> list[tuple[str, dict]]:
    rows = WebhookDelivery.objects.order_by("id")
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    return [(row.event, json.loads(row.body)) for row in rows]


def bot_answer(conversation, text="Your order ships today."):
    message = services.bot_message_start(conversation=conversation, model_name="m")
    return services.bot_message_finish(
        message=message,
        text=text,
        finish_reason="stop",
        partial=False,
        prompt_tokens=10,
        completion_tokens=5,
        ttft_ms=40,
        total_ms=90,
        prompt=[{"role": "system", "content": "never sent out"}],
    )


def test_a_whole_conversation_queues_every_event_in_order(endpoint, site):
    agent = get_user_model().objects.create_user("ana", first_name="Ana", email="ana@desk.test")
    conversation, _ = services.conversation_start(
        site=site, language="en", page_url="https://shop.example.com/p"
    )
    cid = str(conversation.pk)
    services.message_add_customer(conversation=conversation, text="Where is A1002?", client_id="c1")
    answer = bot_answer(conversation)
    services.feedback_submit(conversation=conversation, message_id=answer.pk, rating="up")
    action = action_services.action_save(action=make_action())
    call = action_services.call_record(
        conversation_id=conversation.pk,
        action=action,
        arguments={"order_id": "A1002"},
        outcome=Outcome(status="ok", http_status=200, latency_ms=12, text="Order A1002: shipped"),
    )
    handoff.handoff_request(conversation=conversation)
    agent_services.takeover(conversation_id=conversation.pk, agent=agent)
    reply = agent_services.reply(conversation_id=conversation.pk, agent=agent, text="On its way.")
    agent_services.close(conversation_id=conversation.pk, agent=agent)
    services.csat_submit(conversation=conversation, score=5, comment="great")

    events = queued()
    assert [event for event, _ in events] == [
        "conversation.created",
        "message.customer",
        "message.bot",
        "conversation.rated",
        "action.called",
        "handoff.requested",
        "agent.joined",
        "message.agent",
        "conversation.closed",
        "conversation.rated",
    ]
    assert {event for event, _ in events} == set(EVENTS)  # every event the desk has
    bodies = [body for _, body in events]
    for event, body in events:
        assert body["type"] == event and body["conversation_id"] == cid
        assert body["id"].startswith("evt_") and body["created"].endswith("Z")
    assert len({body["id"] for body in bodies}) == len(bodies)
    created, customer, bot, rated, called, handed, joined, agent_said, closed, csat = (
        b["data"] for b in bodies
    )
    assert agent_said["message_id"] == reply.pk and agent_said["role"] == "agent"
    assert agent_said["text"] == "On its way." and "ana@desk.test" not in json.dumps(agent_said)
    assert created == {
        "channel": "widget",
        "language": "en",
        "region": "",
        "page_url": "https://shop.example.com/p",
        "customer_id": "",
    }
    assert customer["role"] == "customer" and customer["text"] == "Where is A1002?"
    assert bot["message_id"] == answer.pk and bot["text"] == "Your order ships today."
    assert (bot["finish_reason"], bot["partial"], bot["fallback"]) == ("stop", False, False)
    assert rated == {"kind": "answer", "message_id": answer.pk, "rating": "up", "comment": ""}
    assert called["call_id"] == call.pk and called["arguments"] == {"order_id": "A1002"}
    assert (called["action"], called["status"], called["http_status"]) == (
        "order_status",
        "ok",
        200,
    )
    assert handed["ticket_subject"]
    assert joined == {"agent_name": "Ana"}  # never the agent's e-mail address
    assert closed == {"closed_by": "Ana"}
    assert csat == {"kind": "conversation", "score": 5, "comment": "great"}
    assert "never sent out" not in "".join(row.body for row in WebhookDelivery.objects.all())


def test_fallback_and_guarded_answers_and_a_confirmed_call_are_events_too(endpoint, site):
    conversation, _ = services.conversation_start(site=site)
    services.bot_message_fallback(conversation=conversation, text="Try later.", reason="timeout")
    services.bot_message_guarded(
        conversation=conversation, text="I can't say.", guards=("no_knowledge",)
    )
    action = action_services.action_save(action=make_action(name="cancel_order", confirm=True))
    waiting = action_services.call_record(
        conversation_id=conversation.pk, action=action, arguments={"order_id": "A1002"}
    )
    assert [event for event, _ in queued()][-2:] == ["message.bot", "message.bot"]  # not waiting
    action_services.call_confirm(call_id=waiting.pk, conversation_id=conversation.pk)
    action_services.call_finish(
        call_id=waiting.pk, outcome=Outcome(status="error", reason="http_500", http_status=500)
    )
    events = queued()
    assert [event for event, _ in events] == [
        "conversation.created",
        "message.bot",
        "message.bot",
        "action.called",
    ]
    assert events[1][1]["data"]["fallback"] is True
    assert events[2][1]["data"]["finish_reason"] == "no_knowledge"
    assert events[3][1]["data"]["status"] == ActionCall.Status.ERROR
    assert events[3][1]["data"]["call_id"] == waiting.pk


def test_only_subscribed_active_endpoints_of_the_conversations_site_get_rows(endpoint, site):
    only_closed = WebhookEndpoint.objects.create(
        site=site, url="http://127.0.0.1:9/c", events=["conversation.closed"]
    )
    WebhookEndpoint.objects.create(
        site=site, url="http://127.0.0.1:9/off", events=list(EVENTS), active=False
    )
    other = Site.objects.create(name="Other", allowed_origins="https://other.example.com")
    WebhookEndpoint.objects.create(site=other, url="http://127.0.0.1:9/o", events=list(EVENTS))
    conversation, _ = services.conversation_start(site=site)
    services.message_add_customer(conversation=conversation, text="hi", client_id="c1")
    services.message_add_customer(conversation=conversation, text="hi", client_id="c1")  # resend
    services.conversation_close(conversation=conversation, closed_by="The customer")
    assert [event for event, _ in queued(endpoint)] == [
        "conversation.created",
        "message.customer",
        "conversation.closed",
    ]
    assert [event for event, _ in queued(only_closed)] == ["conversation.closed"]
    assert WebhookDelivery.objects.count() == 4  # none for the inactive or the other site's
    # Both copies of one event carry the same event id (receivers de-duplicate by it).
    closed = WebhookDelivery.objects.filter(event="conversation.closed")
    assert (
        len({row.event_id for row in closed}) == 1 and len({row.delivery_id for row in closed}) == 2
    )


def endpoint_lookups(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if "webhooks_webhookendpoint" in q["sql"]]


def test_the_events_own_objects_say_the_site_so_a_message_costs_no_conversation_lookup(
    endpoint, site
):
    with CaptureQueriesContext(connection) as queries:
        conversation, _ = services.conversation_start(site=site)
        services.message_add_customer(conversation=conversation, text="hi", client_id="c1")
    lookups = endpoint_lookups(queries)
    assert len(lookups) == 2 and not any("chat_conversation" in sql for sql in lookups)
    assert [event for event, _ in queued(endpoint)] == ["conversation.created", "message.customer"]
    # No site (the demo page's conversations): no endpoint can subscribe, none is looked up.
    with CaptureQueriesContext(connection) as queries:
        siteless, _ = services.conversation_start(site=None)
        services.message_add_customer(conversation=siteless, text="hi", client_id="c2")
    assert endpoint_lookups(queries) == []
    assert WebhookDelivery.objects.count() == 2


def test_a_write_that_rolls_back_queues_nothing(endpoint, site):
    conversation, _ = services.conversation_start(site=site)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.message_add_customer(conversation=conversation, text="hi", client_id="c1")
        raise RuntimeError("the caller's transaction fails after the write")
    assert [event for event, _ in queued()] == ["conversation.created"]


def test_a_chat_message_makes_a_row_and_no_request_even_to_a_slow_receiver(
    endpoint, site, monkeypatch
):
    receiver = Receiver(free_port(), delay=5).start()
    try:
        endpoint.url = receiver.url
        endpoint.save()
        conversation, _ = services.conversation_start(site=site)

        # No socket is opened by the chat's own writes, whatever the receiver does.
        def no_network(*args, **kwargs):
            raise AssertionError("the chat path opened a connection")

        monkeypatch.setattr(socket.socket, "connect", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        message, created = services.message_add_customer(
            conversation=conversation, text="hi", client_id="c1"
        )
        monkeypatch.undo()
        assert created
        row = WebhookDelivery.objects.get(event="message.customer")
        assert row.status == WebhookDelivery.Status.PENDING and row.attempts == 0
        assert json.loads(row.body)["data"]["message_id"] == message.pk
        assert receiver.hits == []
    finally:
        receiver.stop()
