"""E-mail end to end against real servers: dovecot holds the channel's mailbox (read over
IMAP with IDLE), aiosmtpd takes what the desk sends, and a real inference worker (on the
synthetic token source) answers. A customer's mail is answered in its thread, their reply
joins the same conversation, an agent's console reply goes out by mail, and bounces and
auto-replies are never answered; a draft inbox's answer goes out once an agent sends it."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from agents import services as agent_services
from chat.models import Conversation, Inbox, Message
from connectors.models import Inbound, Outbound
from tests.connectors.email.conftest import ADDRESS, running_connectors
from tests.connectors.email.helpers import customer_mail
from tests.console.helpers import client_for, make_user
from tests.waiting import poll

pytestmark = pytest.mark.django_db(transaction=True)
REPLY = "Hello! How can I help you today?"  # the synthetic engine's answer


def mails_sent(smtp_server, count):
    return lambda: len(smtp_server.mails) >= count


async def test_a_mail_is_answered_in_its_thread_and_the_reply_joins_the_conversation(
    inbox, dovecot, smtp_server, worker, fast_connectors
):
    first = customer_mail(
        text="Where is my order A1002?\n\n-- \nMia", message_id="<m1@customer.test>"
    )
    async with running_connectors():
        await sync_to_async(dovecot.deliver)(first)
        await poll(mails_sent(smtp_server, 1), timeout=30)

        answer = smtp_server.mails[0]
        assert answer["To"] == "mia@customer.test"
        assert ADDRESS in answer["From"]
        assert answer["Subject"] == "Re: Where is my order?"
        assert answer["In-Reply-To"] == "<m1@customer.test>"
        assert answer["References"] == "<m1@customer.test>"
        assert answer["Message-ID"].startswith("<desk.") and answer["Message-ID"].endswith(
            "@shop.test>"
        )
        assert answer["Auto-Submitted"] == "auto-replied"
        assert REPLY in answer.get_content()

        conversation = await sync_to_async(Conversation.objects.get)()
        assert (conversation.channel, conversation.inbox_id) == ("email", inbox.pk)
        assert (conversation.contact, conversation.customer_name) == (
            "mia@customer.test",
            "Mia Chen",
        )
        assert conversation.language == "en"
        question = await sync_to_async(Message.objects.filter(role="customer").get)()
        assert question.text == "Where is my order A1002?"  # the signature is cut
        assert question.metadata["email"]["message_id"] == "<m1@customer.test>"
        assert await sync_to_async(dovecot.unseen)() == 0  # taken, and flagged as such

        # The customer answers from their client: In-Reply-To names the desk's mail.
        reply = customer_mail(
            text="It is A1002, thanks.\n\nOn Sun, 6 Dec 2026 Shop <support@shop.test> wrote:\n> "
            + REPLY,
            subject="Re: Where is my order?",
            message_id="<m2@customer.test>",
            in_reply_to=answer["Message-ID"],
            references=f"<m1@customer.test> {answer['Message-ID']}",
        )
        await sync_to_async(dovecot.deliver)(reply)
        await poll(mails_sent(smtp_server, 2), timeout=30)

        second = smtp_server.mails[1]
        assert second["In-Reply-To"] == "<m2@customer.test>"
        assert second["References"].split() == [
            "<m1@customer.test>",
            answer["Message-ID"],
            "<m2@customer.test>",
        ]
        assert second["Subject"] == "Re: Where is my order?"
        assert await sync_to_async(Conversation.objects.count)() == 1
        texts = await sync_to_async(list)(
            Message.objects.filter(role="customer").values_list("text", flat=True)
        )
        assert texts == ["Where is my order A1002?", "It is A1002, thanks."]  # no quoted history

        # The same mail again (a client's resend, a restart before \Seen): taken once.
        await sync_to_async(dovecot.deliver)(reply)
        await poll(lambda: dovecot.unseen() == 0, timeout=30)
        assert await sync_to_async(Message.objects.filter(role="customer").count)() == 2

        # An agent takes over in the console and replies: the reply goes out by mail.
        agent = await sync_to_async(get_user_model().objects.create_user)(
            "ana", first_name="Ana", is_staff=True
        )
        await sync_to_async(agent_services.takeover)(conversation_id=conversation.pk, agent=agent)
        await sync_to_async(agent_services.reply)(
            conversation_id=conversation.pk, agent=agent, text="I checked: it ships today."
        )
        await poll(mails_sent(smtp_server, 3), timeout=30)
    by_agent = smtp_server.mails[2]
    assert "it ships today" in by_agent.get_content()
    assert by_agent["Auto-Submitted"] is None  # a person wrote it
    assert by_agent["In-Reply-To"] == "<m2@customer.test>"
    assert smtp_server.sink.envelopes[2][1] == ["mia@customer.test"]
    rows = await sync_to_async(list)(Outbound.objects.values_list("status", flat=True))
    assert rows == ["sent", "sent", "sent"]


async def test_bounces_and_auto_replies_are_recorded_and_never_answered(
    inbox, dovecot, smtp_server, worker, fast_connectors
):
    bounce = customer_mail(
        text="Delivery to the following recipient failed permanently: mia@customer.test",
        subject="Delivery Status Notification (Failure)",
        sender="Mail Delivery Subsystem <MAILER-DAEMON@customer.test>",
    )
    out_of_office = customer_mail(
        text="I am out of the office until Monday.",
        subject="Automatic reply: Where is my order?",
        Auto_Submitted="auto-replied",
    )
    newsletter = customer_mail(text="Our news", List_Id="<news.customer.test>")
    ours = customer_mail(text="loop", sender=f"Shop <{ADDRESS}>")
    real = customer_mail(text="Where is my order?")  # to know the others were all read first
    async with running_connectors():
        for mail in (bounce, out_of_office, newsletter, ours, real):
            await sync_to_async(dovecot.deliver)(mail)
        await poll(mails_sent(smtp_server, 1), timeout=30)
    reasons = await sync_to_async(dict)(
        Inbound.objects.filter(outcome="ignored").values_list("external_id", "reason")
    )
    assert reasons == {
        bounce["Message-ID"]: "bounce",
        out_of_office["Message-ID"]: "auto-reply",
        newsletter["Message-ID"]: "auto-reply",
        ours["Message-ID"]: "loop",
    }
    assert await sync_to_async(Conversation.objects.count)() == 1  # the real one only
    assert len(smtp_server.mails) == 1 and smtp_server.mails[0]["In-Reply-To"] == real["Message-ID"]


async def test_a_silent_inbox_puts_the_mail_in_the_queue_for_an_agent(
    inbox, dovecot, smtp_server, worker, fast_connectors
):
    inbox.bot_mode = Inbox.BotMode.SILENT
    await sync_to_async(inbox.save)()
    async with running_connectors():
        await sync_to_async(dovecot.deliver)(customer_mail(text="I need a refund."))
        await poll(sync_to_async(Inbound.objects.filter(outcome="taken").exists), timeout=30)
    conversation = await sync_to_async(Conversation.objects.get)()
    assert conversation.status == Conversation.Status.WAITING
    assert conversation.handoff_requested_at is not None
    assert not await sync_to_async(Message.objects.filter(role="bot").exists)()
    assert not await sync_to_async(Outbound.objects.exists)()


async def test_the_reader_survives_the_imap_server_going_away(
    inbox, dovecot, smtp_server, worker, fast_connectors, caplog
):
    async with running_connectors() as connectors:
        reader = await poll(lambda: connectors.readers.get(inbox.pk), timeout=10)
        reader = reader[1]
        await poll(reader.connected.is_set, timeout=10)
        await sync_to_async(dovecot.stop)()
        await poll(lambda: not reader.connected.is_set(), timeout=30)
        await asyncio.sleep(0.5)  # several reconnects fail meanwhile
        await sync_to_async(dovecot.start)()
        await sync_to_async(dovecot.deliver)(customer_mail(text="Are you there?"))
        await poll(mails_sent(smtp_server, 1), timeout=30)
    outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outages) == 1  # one line for the outage, however many tries
    assert dovecot.password not in caplog.text


async def test_a_draft_inbox_sends_the_bot_s_answer_once_an_agent_sends_it(
    inbox, dovecot, smtp_server, worker, fast_connectors, django_user_model
):
    inbox.bot_mode = Inbox.BotMode.DRAFT
    await sync_to_async(inbox.save)()
    agent = await sync_to_async(make_user)(django_user_model, "ana")
    client = await sync_to_async(client_for)(agent)
    async with running_connectors():
        await sync_to_async(dovecot.deliver)(customer_mail(text="Can I return the shoes?"))
        held = await poll(
            sync_to_async(lambda: Outbound.objects.filter(status="held").first()), timeout=30
        )
        draft = await sync_to_async(Message.objects.get)(pk=held.message_id)
        assert draft.role == "bot" and draft.metadata["draft"] == "held"
        page = (await sync_to_async(client.get)(f"/console/c/{held.conversation_id}/")).content
        assert "Draft: not sent to the customer" in page.decode()
        assert smtp_server.mails == []  # nothing goes out on its own

        url = f"/console/c/{held.conversation_id}/draft/{draft.pk}/send/"
        response = await sync_to_async(client.post)(url)
        assert response.status_code == 200 and "Draft sent" in response.content.decode()
        await poll(mails_sent(smtp_server, 1), timeout=30)
        again = await sync_to_async(client.post)(url)
        assert again.status_code == 409  # sent once
    assert REPLY in smtp_server.mails[0].get_content()
    assert len(smtp_server.mails) == 1
