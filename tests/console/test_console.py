"""The agent console: staff-only pages and actions, the inbox, takeover races, tickets with
internal notes, canned replies, and the console WebSocket through the ASGI router."""

import asyncio
import datetime as dt
import json
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import Client
from django.urls import path

from agents import services
from agents.consumers import ConsoleConsumer
from agents.models import CannedReply, Ticket, TicketNote
from chat import frames, group_events, handoff
from chat import services as chat_services
from chat.models import Conversation, Feedback, Message, Site
from tests.conftest import ORIGIN
from tests.console.helpers import (
    client_for,
    console_app,
    console_socket,
    make_user,
    receive_until,
    send,
    synced,
)

pytestmark = pytest.mark.django_db(transaction=True)


def bare_console_app():
    """The consumer with session auth but without the route's origin check."""
    return AuthMiddlewareStack(URLRouter([path("ws/console/", ConsoleConsumer.as_asgi())]))


# --- Helpers ------------------------------------------------------------------------------


def conversation(
    *,
    status=Conversation.Status.BOT,
    agent=None,
    texts=(),
    name="",
    email="",
    site=None,
    language="en",
) -> Conversation:
    conv, _ = chat_services.conversation_start(site=site, language=language)
    Conversation.objects.filter(pk=conv.pk).update(
        status=status, assigned_agent=agent, customer_name=name, customer_email=email
    )
    for role, text in texts:
        Message.objects.create(conversation=conv, role=role, text=text)
    conv.refresh_from_db()
    return conv


def ids(rows) -> set[str]:
    return {str(r.pk) for r in rows}


C, B, A = Message.Role.CUSTOMER, Message.Role.BOT, Message.Role.AGENT


# --- Access -------------------------------------------------------------------------------


def test_pages_and_actions_refuse_anonymous_and_non_staff(client, django_user_model):
    staff = make_user(django_user_model, "ann")
    conv = conversation(status=Conversation.Status.HUMAN, agent=staff, texts=[(C, "hi")])
    ticket = Ticket.objects.create(subject="Order", conversation=conv)
    reply = CannedReply.objects.create(shortcut="hi", title="Hi", text="Hello")
    pages = [
        "/console/",
        "/console/inbox/",
        f"/console/c/{conv.pk}/",
        f"/console/c/{conv.pk}/controls/",
        f"/console/c/{conv.pk}/transcript/",
        f"/console/c/{conv.pk}/canned/?q=",
        "/console/tickets/",
        "/console/tickets/list/",
        f"/console/tickets/{ticket.pk}/",
        f"/console/tickets/{ticket.pk}/notes/",
        "/console/canned/",
        f"/console/canned/{reply.pk}/",
    ]
    posts = {
        f"/console/c/{conv.pk}/takeover/": {},
        f"/console/c/{conv.pk}/handback/": {},
        f"/console/c/{conv.pk}/close/": {},
        f"/console/c/{conv.pk}/reply/": {"text": "x"},
        f"/console/c/{conv.pk}/tickets/": {"subject": "s", "priority": "low"},
        f"/console/tickets/{ticket.pk}/notes/": {"text": "secret"},
        f"/console/tickets/{ticket.pk}/props/": {"status": "solved"},
        "/console/canned/": {"shortcut": "x", "title": "x", "text": "x"},
    }
    customer = client_for(make_user(django_user_model, "bob", staff=False))
    for who in (client, customer):
        for url in pages:
            response = who.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/?next=/console/"), url
        for url, data in posts.items():
            response = who.post(url, data)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/"), url
        # htmx requests are sent to the login page as a whole, not swapped into a partial.
        response = who.get("/console/inbox/", headers={"HX-Request": "true"})
        assert response.status_code == 403 and response["HX-Redirect"].startswith("/admin/login/")
    conv.refresh_from_db()
    ticket.refresh_from_db()
    assert (conv.status, conv.assigned_agent_id) == ("human", staff.pk)
    assert not conv.messages.filter(role=A).exists()
    assert (ticket.status, Ticket.objects.count(), TicketNote.objects.count()) == ("open", 1, 0)
    assert list(CannedReply.objects.values_list("shortcut", flat=True)) == ["hi"]
    # And staff do get in.
    assert client_for(staff).get("/console/").status_code == 200


def test_post_actions_need_the_csrf_token(django_user_model):
    staff = make_user(django_user_model, "ann")
    conv = conversation()
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(staff)
    assert checked.post(f"/console/c/{conv.pk}/takeover/").status_code == 403
    conv.refresh_from_db()
    assert conv.status == "bot"
    page = checked.get(f"/console/c/{conv.pk}/")
    token = page.context["csrf_token"]
    assert f'"X-CSRFToken": "{token}"' in page.content.decode()
    response = checked.post(f"/console/c/{conv.pk}/takeover/", headers={"X-CSRFToken": str(token)})
    assert response.status_code == 200
    conv.refresh_from_db()
    assert conv.status == "human"


# --- Inbox --------------------------------------------------------------------------------


def test_inbox_groups_conversations(django_user_model):
    ann, bea = make_user(django_user_model, "ann"), make_user(django_user_model, "bea")
    bot = conversation(texts=[(C, "where is my order"), (B, "Let me check.")])
    waiting = conversation(status=Conversation.Status.WAITING, texts=[(C, "a human please")])
    Conversation.objects.filter(pk=waiting.pk).update(handoff_requested_at=waiting.created_at)
    mine = conversation(status=Conversation.Status.HUMAN, agent=ann, texts=[(C, "hello")])
    others = conversation(status=Conversation.Status.HUMAN, agent=bea, texts=[(C, "hey")])
    closed = conversation(status=Conversation.Status.CLOSED, texts=[(C, "bye")])
    Message.objects.create(conversation=bot, role=B, text="", is_partial=True)  # streaming

    response = client_for(ann).get("/console/")
    assert response.status_code == 200
    groups = response.context["inbox"].by_key
    assert {key: ids(g.rows) for key, g in groups.items()} == {
        "bot": {str(bot.pk)},
        "waiting": {str(waiting.pk)},
        "mine": {str(mine.pk)},
        "others": {str(others.pk)},
        "closed": {str(closed.pk)},
    }
    assert groups["bot"].rows[0].snippet == "Let me check."
    html = response.content.decode()
    assert html.count("badge--handoff") == 1 and "a human please" in html
    # Bea sees the same conversations the other way round.
    groups = client_for(bea).get("/console/inbox/").context["inbox"].by_key
    assert ids(groups["mine"].rows) == {str(others.pk)}
    assert ids(groups["others"].rows) == {str(mine.pk)}


def test_unread_counts_customer_messages_since_the_last_answer_until_opened(django_user_model):
    ann = make_user(django_user_model, "ann")
    conv = conversation(
        status=Conversation.Status.HUMAN,
        agent=ann,
        texts=[(C, "one"), (B, "answer"), (C, "two"), (C, "three")],
    )
    client = client_for(ann)

    def unread():
        (row,) = client.get("/console/inbox/").context["inbox"].by_key["mine"].rows
        return row.unread

    assert unread() == 2
    assert client.get(f"/console/c/{conv.pk}/").status_code == 200  # opening it reads it
    assert unread() == 0
    Message.objects.create(conversation=conv, role=C, text="four")
    assert unread() == 3  # since the last answer, as documented in agents.selectors
    Message.objects.create(conversation=conv, role=A, text="on it")
    Message.objects.create(conversation=conv, role=C, text="five")
    assert unread() == 1
    # The conversation open in the pane (`current`) counts as read on refresh.
    response = client.get("/console/inbox/", {"current": str(conv.pk)})
    assert response.context["inbox"].by_key["mine"].rows[0].unread == 0


def test_inbox_search(django_user_model):
    ann = make_user(django_user_model, "ann")
    by_text = conversation(texts=[(C, "My parcel ZX-4471 never arrived")])
    by_name = conversation(name="Ada Lovelace", texts=[(C, "hello")])
    by_email = conversation(
        email="grace@navy.example", texts=[(C, "hello")], status=Conversation.Status.CLOSED
    )
    other = conversation(texts=[(C, "unrelated question")])
    client = client_for(ann)

    def found(q):
        groups = client.get("/console/inbox/", {"q": q}).context["inbox"].groups
        return set().union(*(ids(g.rows) for g in groups))

    assert found("zx-4471") == {str(by_text.pk)}
    assert found("lovelace") == {str(by_name.pk)}
    assert found("navy.example") == {str(by_email.pk)}
    assert found(str(other.pk)) == {str(other.pk)}
    assert found(str(other.pk)[:8]) == {str(other.pk)}
    assert found("hello") == {str(by_name.pk), str(by_email.pk)}
    assert found("nothing like this") == set()
    assert found("") == {str(c.pk) for c in (by_text, by_name, by_email, other)}
    html = client.get("/console/inbox/", {"q": "<b>zx"}).content.decode()
    assert "&lt;b&gt;zx" in html and "<b>zx" not in html


# --- Conversation actions -----------------------------------------------------------------


def test_conversation_page_shows_transcript_metadata_ratings_and_tickets(django_user_model):
    ann = make_user(django_user_model, "ann")
    site = Site.objects.create(name="Acme Shop", allowed_origins="https://acme.example")
    conv = conversation(
        site=site,
        language="de",
        name="Ada",
        texts=[(C, "<script>alert(1)</script>"), (B, "Hallo!")],
    )
    Conversation.objects.filter(pk=conv.pk).update(
        region="Berlin", csat_score=4, page_url="https://acme.example/cart"
    )
    Feedback.objects.create(message=conv.messages.get(role=B), rating="down")
    Message.objects.create(conversation=conv, role=Message.Role.SYSTEM, text="A note for people")
    Ticket.objects.create(subject="Refund for order 7", conversation=conv)
    html = client_for(ann).get(f"/console/c/{conv.pk}/").content.decode()
    for text in (
        "Acme Shop",
        "Berlin",
        "https://acme.example/cart",
        "4/5",
        "down 1",
        "Customer rated it down",
        "Refund for order 7",
        "Hallo!",
        "msg--system",
        "A note for people",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "Take over",
    ):
        assert text in html, text
    assert "<script>alert(1)" not in html
    assert "msg--streaming" not in html

    # An answer being written is shown streaming (console.js appends its deltas); one whose
    # writer died long ago is shown as what it is.
    live = Message.objects.create(conversation=conv, role=B, text="", is_partial=True)
    html = client_for(ann).get(f"/console/c/{conv.pk}/transcript/").content.decode()
    assert f'msg--streaming" data-id="{live.pk}">' in html
    Message.objects.filter(pk=live.pk).update(created_at=live.created_at - dt.timedelta(hours=1))
    html = client_for(ann).get(f"/console/c/{conv.pk}/transcript/").content.decode()
    assert (
        "msg--streaming" not in html
        and f'msg--partial" data-id="{live.pk}" data-final="1">' in html
    )
    # Inside the inbox (htmx, target #pane) only the pane comes back.
    pane = client_for(ann).get(
        f"/console/c/{conv.pk}/", headers={"HX-Request": "true", "HX-Target": "pane"}
    )
    assert 'id="inbox"' not in pane.content.decode() and "Hallo!" in pane.content.decode()


def test_takeover_exactly_one_of_two_agents_wins(django_user_model):
    agents = [
        make_user(django_user_model, "ann", first="Ann", last="Archer"),
        make_user(django_user_model, "bea", first="Bea", last="Baker"),
    ]
    conv = conversation(status=Conversation.Status.WAITING, texts=[(C, "help")])
    clients = [client_for(a) for a in agents]
    barrier = threading.Barrier(2)
    results = {}

    def attempt(i):
        try:
            barrier.wait()
            results[i] = clients[i].post(f"/console/c/{conv.pk}/takeover/")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409]
    winner = next(i for i, r in results.items() if r.status_code == 200)
    loser = 1 - winner
    conv.refresh_from_db()
    assert (conv.status, conv.assigned_agent_id) == ("human", agents[winner].pk)
    name = agents[winner].get_full_name()
    assert f"{name} already holds this conversation." in results[loser].content.decode()
    assert "You hold this conversation" in results[winner].content.decode()
    assert conv.messages.filter(text=f"{name} joined the conversation.").count() == 1


def test_reply_only_by_the_agent_holding_the_conversation(django_user_model):
    ann, bea = make_user(django_user_model, "ann"), make_user(django_user_model, "bea")
    conv = conversation(texts=[(C, "help")])
    url = f"/console/c/{conv.pk}/reply/"
    refused = client_for(ann).post(url, {"text": "I am here"})  # the bot still answers
    assert refused.status_code == 409
    assert "Take over the conversation before replying." in refused.content.decode()
    assert "I am here" in refused.content.decode()  # the draft comes back
    assert client_for(ann).post(f"/console/c/{conv.pk}/takeover/").status_code == 200
    refused = client_for(bea).post(url, {"text": "Me too"})
    assert refused.status_code == 409
    assert not conv.messages.filter(role=A).exists()
    assert client_for(ann).post(url, {"text": "   "}).status_code == 400
    sent = client_for(ann).post(url, {"text": "I am here"})
    assert sent.status_code == 200
    message = conv.messages.get(role=A)
    assert (message.text, message.author_id) == ("I am here", ann.pk)
    assert json.loads(sent["HX-Trigger"]) == {"cs:replied": {"id": message.pk}}


def test_hand_back_and_close(django_user_model):
    ann, bea = make_user(django_user_model, "ann"), make_user(django_user_model, "bea")
    conv = conversation(texts=[(C, "help")])
    base = f"/console/c/{conv.pk}/"
    assert client_for(ann).post(base + "takeover/").status_code == 200
    refused = client_for(bea).post(base + "handback/")
    assert refused.status_code == 409
    assert "Only the agent holding the conversation can hand it back." in refused.content.decode()
    conv.refresh_from_db()
    assert conv.status == "human"
    back = client_for(ann).post(base + "handback/")
    assert back.status_code == 200 and "Take over" in back.content.decode()
    conv.refresh_from_db()
    assert (conv.status, conv.assigned_agent_id) == ("bot", None)
    closed = client_for(bea).post(base + "close/")
    assert closed.status_code == 200 and "This conversation is closed." in closed.content.decode()
    conv.refresh_from_db()
    assert conv.status == "closed" and conv.closed_at is not None
    again = client_for(ann).post(base + "close/")
    assert again.status_code == 409 and "already closed" in again.content.decode()
    assert client_for(ann).get(base + "takeover/").status_code == 405


# --- Tickets ------------------------------------------------------------------------------


def test_ticket_list_filters_and_update(django_user_model):
    ann, bea = make_user(django_user_model, "ann"), make_user(django_user_model, "bea")
    mine = Ticket.objects.create(subject="Mine", assignee=ann, priority="high")
    theirs = Ticket.objects.create(subject="Theirs", assignee=bea)
    nobody = Ticket.objects.create(subject="Nobody's", priority="urgent")
    solved = Ticket.objects.create(subject="Done", status="solved")
    client = client_for(ann)

    def listed(**params):
        return {t.subject for t in client.get("/console/tickets/list/", params).context["tickets"]}

    assert listed() == {"Mine", "Theirs", "Nobody's"}  # open or pending by default
    assert listed(status="") == {"Mine", "Theirs", "Nobody's", "Done"}
    assert listed(status="solved") == {"Done"}
    assert listed(assignee="me") == {"Mine"}
    assert listed(assignee="unassigned") == {"Nobody's"}
    assert listed(priority="urgent") == {"Nobody's"}
    assert "Theirs" in client.get("/console/tickets/").content.decode()

    response = client.post(
        f"/console/tickets/{nobody.pk}/props/",
        {"status": "pending", "priority": "low", "assignee": str(bea.pk)},
    )
    assert response.status_code == 200
    nobody.refresh_from_db()
    assert (nobody.status, nobody.priority, nobody.assignee_id) == ("pending", "low", bea.pk)
    client.post(
        f"/console/tickets/{nobody.pk}/props/",
        {"status": "pending", "priority": "low", "assignee": "none"},
    )
    nobody.refresh_from_db()
    assert nobody.assignee_id is None
    bad = client.post(f"/console/tickets/{mine.pk}/props/", {"status": "nonsense"})
    assert bad.status_code == 400
    mine.refresh_from_db()
    assert mine.status == "open"
    assert theirs.pk and solved.pk


async def test_ticket_note_is_stored_shown_to_staff_and_never_sent_to_the_customer(
    connect, django_user_model
):
    ann = await database_sync_to_async(make_user)(django_user_model, "ann")
    customer, first = await connect()
    await customer.send({"type": "handoff.request"})
    await customer.receive_until(lambda f: f["type"] == "handoff.ack")
    conv = await Conversation.objects.aget(pk=first["id"])
    ticket = await Ticket.objects.aget(conversation=conv)
    client = await sync_to_async(client_for)(ann)
    staff_socket = await console_socket(ann)

    secret = "Internal: customer was rude, refund denied (case 9931)"
    response = await sync_to_async(client.post)(
        f"/console/tickets/{ticket.pk}/notes/", {"text": secret}
    )
    assert response.status_code == 200 and secret in response.content.decode()
    note = await TicketNote.objects.aget(ticket=ticket)
    assert (note.text, note.author_id) == (secret, ann.pk)
    page = await sync_to_async(client.get)(f"/console/tickets/{ticket.pk}/")
    assert secret in page.content.decode()

    # The console hears that the ticket changed (and nothing of the note's text) …
    frame = await receive_until(staff_socket, lambda f: f["type"] == "console.ticket")
    assert frame == {"type": "console.ticket", "ticket_id": ticket.pk, "reason": "note"}
    # … while the customer's socket receives nothing at all, let alone the note.
    assert await customer.nothing_more(0.5)
    assert all("9931" not in json.dumps(f) for f in customer.frames)
    await staff_socket.disconnect()


def test_ticket_from_a_conversation(django_user_model):
    ann = make_user(django_user_model, "ann")
    conv = conversation(texts=[(C, "help")])
    response = client_for(ann).post(
        f"/console/c/{conv.pk}/tickets/", {"subject": "Call back tomorrow", "priority": "high"}
    )
    assert response.status_code == 200 and "Call back tomorrow" in response.content.decode()
    ticket = Ticket.objects.get(conversation=conv)
    assert (ticket.subject, ticket.priority, ticket.assignee_id) == (
        "Call back tomorrow",
        "high",
        ann.pk,
    )
    assert (
        client_for(ann)
        .post(f"/console/c/{conv.pk}/tickets/", {"subject": " ", "priority": "high"})
        .status_code
        == 400
    )


# --- Canned replies -----------------------------------------------------------------------


def test_canned_reply_insertion_renders_variables(django_user_model):
    ann = make_user(django_user_model, "ann", first="Grace", last="Hopper")
    site = Site.objects.create(name="Acme Shop", allowed_origins="https://acme.example")
    conv = conversation(site=site, name="Ada")
    CannedReply.objects.create(
        shortcut="greet",
        title="Greeting",
        text="Hi {customer_name}, I'm {agent_name} from {site_name}.",
    )
    CannedReply.objects.create(shortcut="refund", title="Refund policy", text="30 days.")
    client = client_for(ann)
    data = client.get(f"/console/c/{conv.pk}/canned/", {"q": "gre"}).json()
    assert data == {
        "replies": [
            {
                "id": data["replies"][0]["id"],
                "shortcut": "greet",
                "title": "Greeting",
                "text": "Hi Ada, I'm Grace Hopper from Acme Shop.",
            }
        ]
    }
    everything = client.get(f"/console/c/{conv.pk}/canned/", {"q": ""}).json()["replies"]
    assert [r["shortcut"] for r in everything] == ["greet", "refund"]
    anonymous = conversation()
    text = client.get(f"/console/c/{anonymous.pk}/canned/", {"q": "greet"}).json()
    assert text["replies"][0]["text"] == "Hi there, I'm Grace Hopper from ."


def test_canned_reply_management(django_user_model):
    ann = make_user(django_user_model, "ann")
    client = client_for(ann)
    created = client.post(
        "/console/canned/",
        {"shortcut": "Thanks", "title": "Thank you", "text": "Thanks, {customer_name}!"},
    )
    assert created.status_code == 302 and created["Location"] == "/console/canned/"
    reply = CannedReply.objects.get()
    assert (reply.shortcut, reply.title, reply.created_by_id) == ("thanks", "Thank you", ann.pk)
    duplicate = client.post(
        "/console/canned/", {"shortcut": "thanks", "title": "Again", "text": "x"}
    )
    assert (
        duplicate.status_code == 200 and "/thanks is already taken." in duplicate.content.decode()
    )
    assert CannedReply.objects.count() == 1
    edited = client.post(
        f"/console/canned/{reply.pk}/",
        {"shortcut": "thanks", "title": "Thanks", "text": "Many thanks!"},
    )
    assert edited.status_code == 302
    reply.refresh_from_db()
    assert (reply.title, reply.text) == ("Thanks", "Many thanks!")
    assert "/thanks" in client.get("/console/canned/").content.decode()


# --- The console socket -------------------------------------------------------------------


async def test_console_socket_refuses_anonymous_non_staff_and_foreign_pages(django_user_model):
    customer = await database_sync_to_async(make_user)(django_user_model, "bob", staff=False)
    ann = await database_sync_to_async(make_user)(django_user_model, "ann")
    evil = (b"origin", b"https://evil.example")
    for user, origin, code in [
        (None, ORIGIN, "forbidden"),
        (customer, ORIGIN, "forbidden"),
        (ann, evil, "origin_not_allowed"),
        (ann, None, "origin_not_allowed"),
    ]:
        # The consumer checks the origin itself too, whatever asgi.py wraps it in.
        ws = await console_socket(user, origin, app=bare_console_app())
        frame = json.loads(await ws.receive_from())
        assert (frame["type"], frame["code"]) == ("error", code)
        assert await ws.receive_output() == {"type": "websocket.close", "code": 4403}
    # Through the application itself, a foreign page is refused at the handshake already.
    communicator = WebsocketCommunicator(console_app(), "/ws/console/", headers=[evil])
    assert (await communicator.connect())[0] is False
    ws = await console_socket(ann)
    await synced(ws)
    await ws.disconnect()


async def test_console_socket_hears_status_changes_and_handoffs(django_user_model):
    ann = await database_sync_to_async(make_user)(django_user_model, "ann", first="Ann")
    conv = await database_sync_to_async(conversation)(texts=[(C, "I need a person")])
    ws = await console_socket(ann)
    await synced(ws)
    await database_sync_to_async(handoff.handoff_request)(conversation=conv)
    update = await receive_until(ws, lambda f: f["type"] == "console.update")
    assert update == {
        "type": "console.update",
        "conversation_id": str(conv.pk),
        "reason": "waiting",
    }
    alert = await receive_until(ws, lambda f: f["type"] == "console.handoff")
    assert alert == {
        "type": "console.handoff",
        "conversation_id": str(conv.pk),
        "subject": "I need a person",
    }
    await database_sync_to_async(services.takeover)(conversation_id=conv.pk, agent=ann)
    update = await receive_until(ws, lambda f: f["type"] == "console.update")
    assert (update["conversation_id"], update["reason"]) == (str(conv.pk), "human")
    await ws.disconnect()


async def test_watching_a_conversation_streams_its_events(django_user_model):
    ann = await database_sync_to_async(make_user)(django_user_model, "ann", first="Ann")
    conv = await database_sync_to_async(conversation)(texts=[(C, "hello")])
    other = await database_sync_to_async(conversation)(texts=[(C, "elsewhere")])
    ws = await console_socket(ann)
    await send(ws, {"type": "watch", "conversation_id": str(conv.pk)})
    await synced(ws)
    await database_sync_to_async(services.takeover)(conversation_id=conv.pk, agent=ann)
    status = await receive_until(ws, lambda f: f["type"] == "conv.status")
    assert (status["conversation_id"], status["status"], status["agent_name"]) == (
        str(conv.pk),
        "human",
        "Ann",
    )
    message = await database_sync_to_async(services.reply)(
        conversation_id=conv.pk, agent=ann, text="Hi, Ann here."
    )
    frame = await receive_until(ws, lambda f: f["type"] == "conv.message" and f["role"] == "agent")
    assert frame == {
        "type": "conv.message",
        "conversation_id": str(conv.pk),
        "id": message.pk,
        "role": "agent",
        "text": "Hi, Ann here.",
        "author_name": "Ann",
    }
    # A streamed bot frame and customer typing on the watch group reach the console as they are.
    layer = get_channel_layer()
    delta = frames.bot_delta_frame(message_id=7, text="Hel")
    await layer.group_send(
        group_events.watch_group(conv.pk),
        group_events.conv_bot(conversation_id=str(conv.pk), frame=delta),
    )
    assert await receive_until(ws, lambda f: f["type"] == "conv.bot") == {
        "type": "conv.bot",
        "conversation_id": str(conv.pk),
        "frame": delta,
    }
    await layer.group_send(
        group_events.watch_group(conv.pk),
        group_events.conv_typing(conversation_id=str(conv.pk), who="customer"),
    )
    typing = await receive_until(ws, lambda f: f["type"] == "conv.typing")
    assert typing["who"] == "customer"

    # Watching another conversation stops the first one's events.
    await send(ws, {"type": "watch", "conversation_id": str(other.pk)})
    await synced(ws)
    await layer.group_send(
        group_events.watch_group(conv.pk),
        group_events.conv_typing(conversation_id=str(conv.pk), who="customer"),
    )
    await layer.group_send(
        group_events.watch_group(other.pk),
        group_events.conv_typing(conversation_id=str(other.pk), who="customer"),
    )
    typing = await receive_until(ws, lambda f: f["type"] == "conv.typing")
    assert typing["conversation_id"] == str(other.pk)
    await ws.disconnect()


async def test_agent_typing_reaches_the_customer_group_only_from_the_holder(django_user_model):
    ann = await database_sync_to_async(make_user)(django_user_model, "ann", first="Ann")
    bea = await database_sync_to_async(make_user)(django_user_model, "bea")
    conv = await database_sync_to_async(conversation)(
        status=Conversation.Status.HUMAN, agent=ann, texts=[(C, "hello")]
    )
    layer = get_channel_layer()
    customer_channel = await layer.new_channel()
    await layer.group_add(group_events.conversation_group(conv.pk), customer_channel)

    intruder = await console_socket(bea)
    await send(intruder, {"type": "typing", "conversation_id": str(conv.pk)})
    error = await receive_until(intruder, lambda f: f["type"] == "error")
    assert error["code"] == "not_holder"
    holder = await console_socket(ann)
    await send(holder, {"type": "typing", "conversation_id": str(conv.pk)})
    await send(holder, {"type": "typing", "conversation_id": str(conv.pk)})  # throttled
    await synced(holder)
    event = await asyncio.wait_for(layer.receive(customer_channel), 5)
    assert event == {
        "type": "conv.typing",
        "conversation_id": str(conv.pk),
        "who": "agent",
        "name": "Ann",
    }
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(customer_channel), 0.5)
    await intruder.disconnect()
    await holder.disconnect()


async def test_malformed_frames_get_errors_and_the_socket_stays_open(django_user_model):
    ann = await database_sync_to_async(make_user)(django_user_model, "ann")
    ws = await console_socket(ann)
    cases = [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"no": "type"}', "bad_frame"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "watch", "conversation_id": "nope"}, "bad_frame"),
        ({"type": "watch", "conversation_id": 12}, "bad_frame"),
        (
            {"type": "watch", "conversation_id": "8f6a2b54-0000-4000-8000-000000000000"},
            "conversation_not_found",
        ),
        ({"type": "typing"}, "bad_frame"),
        ("x" * 5000, "bad_frame"),
    ]
    for frame, code in cases:
        await send(ws, frame)
        reply = json.loads(await ws.receive_from())
        assert (reply["type"], reply["code"]) == ("error", code), frame
    await ws.send_to(bytes_data=b"\x00\x01")
    assert json.loads(await ws.receive_from())["code"] == "bad_frame"
    await synced(ws)
    await ws.disconnect()


async def test_presence_beats_on_connect_and_ping_and_leaves_on_disconnect(django_user_model):
    from agents import presence
    from runtime.redis_client import get_redis

    ann = await database_sync_to_async(make_user)(django_user_model, "ann")
    redis = get_redis()
    ws = await console_socket(ann)
    await synced(ws)
    members = await redis.zrange(presence.KEY, 0, -1)
    assert len(members) == 1 and members[0].startswith(f"{ann.pk}:")
    first = await redis.zscore(presence.KEY, members[0])
    await asyncio.sleep(0.05)  # the beat's score is its time: the clock must move on
    await synced(ws)
    assert await redis.zscore(presence.KEY, members[0]) > first
    await ws.disconnect()
    assert await redis.zrange(presence.KEY, 0, -1) == []


async def test_a_console_gone_without_leaving_goes_offline_then_out_of_redis():
    import time

    from agents import presence
    from runtime.redis_client import get_redis

    redis = get_redis()
    ttl = presence.TTL_SECONDS
    quiet, dead = presence.member(1, "quiet"), presence.member(2, "dead")
    await redis.zadd(presence.KEY, {quiet: time.time() - ttl - 1, dead: time.time() - 11 * ttl})
    await presence.beat(redis, 3, "alive")
    # "quiet" missed its pings: offline, not yet forgotten; "dead" is gone from Redis.
    assert await sync_to_async(presence.online_agent_ids)() == {3}
    assert set(await redis.zrange(presence.KEY, 0, -1)) == {quiet, presence.member(3, "alive")}


async def test_a_ping_rejoins_the_groups_lost_with_a_redis_restart(django_user_model):
    from runtime.redis_client import get_redis

    ann = await database_sync_to_async(make_user)(django_user_model, "ann", first="Ann")
    conv = await database_sync_to_async(conversation)(texts=[(C, "hello")])
    ws = await console_socket(ann)
    await send(ws, {"type": "watch", "conversation_id": str(conv.pk)})
    await synced(ws)
    await get_redis().flushall()  # what a restarted Redis without persistence holds
    await synced(ws)
    layer = get_channel_layer()
    await layer.group_send(
        group_events.watch_group(conv.pk),
        group_events.conv_typing(conversation_id=str(conv.pk), who="customer"),
    )
    assert (await receive_until(ws, lambda f: f["type"] == "conv.typing"))["who"] == "customer"
    await layer.group_send(
        group_events.CONSOLE_GROUP,
        group_events.console_update(conversation_id=str(conv.pk), reason="new"),
    )
    assert (await receive_until(ws, lambda f: f["type"] == "console.update"))["reason"] == "new"
    await ws.disconnect()
