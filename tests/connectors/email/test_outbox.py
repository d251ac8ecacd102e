"""The e-mail outbox: rows written with the bot's and agents' messages of e-mail
conversations only, sent through a real SMTP server in order per conversation, retried with
backoff while it is down, and never sent twice once marked sent (a restart included)."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone

from agents import services as agent_services
from chat import services as chat_services
from chat.models import Conversation, Inbox
from connectors import selectors, services
from connectors.models import Outbound
from tests.connectors.email.conftest import ADDRESS, running_connectors
from tests.connectors.email.helpers import SmtpServer, free_port
from tests.waiting import poll

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mail_inbox(site, settings):
    """An inbox whose mailbox nobody reads here (its IMAP port is closed): the outbox only."""
    return Inbox.objects.create(
        site=site,
        kind=Inbox.Kind.EMAIL,
        name="Support",
        settings={
            "address": ADDRESS,
            "imap_url": f"imap://u:p@127.0.0.1:{free_port()}/INBOX",
            "smtp_url": f"smtp://127.0.0.1:{free_port()}",
        },
    )


def mail_conversation(inbox, contact="mia@customer.test", first_id="<m1@customer.test>"):
    conversation, _ = chat_services.conversation_start(
        site=inbox.site,
        channel=Conversation.Channel.EMAIL,
        inbox=inbox,
        contact=contact,
        metadata={"subject": "Order"},
    )
    chat_services.message_add_customer(
        conversation=conversation,
        text="Where is it?",
        client_id=first_id,
        metadata={"email": {"message_id": first_id}},
    )
    return conversation


def bot_says(conversation, text):
    message = chat_services.bot_message_start(conversation=conversation, model_name="m")
    return chat_services.bot_message_finish(
        message=message,
        text=text,
        finish_reason="stop",
        partial=False,
        prompt_tokens=1,
        completion_tokens=1,
        ttft_ms=1,
        total_ms=1,
    )


def test_only_the_desk_s_messages_in_mail_conversations_are_queued(mail_inbox, site):
    widget, _ = chat_services.conversation_start(site=site)
    bot_says(widget, "Hi from the widget")
    conversation = mail_conversation(mail_inbox)
    answer = bot_says(conversation, "It ships today.")
    bot_says(conversation, "   ")  # nothing to send
    row = Outbound.objects.get()
    assert (row.conversation_id, row.message_id, row.status) == (
        conversation.pk,
        answer.pk,
        "pending",
    )
    assert row.external_id.startswith("<desk.") and row.external_id.endswith("@shop.test>")

    agent = get_user_model().objects.create_user("ana", is_staff=True)
    agent_services.takeover(conversation_id=conversation.pk, agent=agent)
    agent_services.reply(conversation_id=conversation.pk, agent=agent, text="Checked: today.")
    assert Outbound.objects.count() == 2

    mail_inbox.enabled = False
    mail_inbox.save()
    agent_services.reply(conversation_id=conversation.pk, agent=agent, text="More.")
    assert Outbound.objects.count() == 2  # a disabled channel queues nothing


def test_the_thread_of_a_message_is_every_mail_before_it(mail_inbox):
    conversation = mail_conversation(mail_inbox)
    first = bot_says(conversation, "one")
    Outbound.objects.filter(message=first).update(external_id="<desk.1@shop.test>")
    chat_services.message_add_customer(
        conversation=conversation,
        text="and?",
        client_id="c2",
        metadata={"email": {"message_id": "<m2@customer.test>"}},
    )
    second = bot_says(conversation, "two")
    thread = selectors.thread_before(conversation=conversation, message_id=second.pk)
    assert thread.subject == "Order"
    assert thread.in_reply_to == "<m2@customer.test>"
    assert thread.references == ("<m1@customer.test>", "<desk.1@shop.test>", "<m2@customer.test>")
    earlier = selectors.thread_before(conversation=conversation, message_id=first.pk)
    assert earlier.references == ("<m1@customer.test>",)


async def test_an_smtp_outage_is_retried_and_each_conversation_gets_its_mails_in_order(
    mail_inbox, fast_connectors
):
    conversations = []
    for n in range(2):
        conversation = await sync_to_async(mail_conversation)(
            mail_inbox, contact=f"c{n}@customer.test", first_id=f"<first{n}@customer.test>"
        )
        conversations.append(conversation)
    for step in range(3):
        for n, conversation in enumerate(conversations):
            await sync_to_async(bot_says)(conversation, f"c{n} step {step}")
    smtp_url = mail_inbox.settings["smtp_url"]
    async with running_connectors():
        # Nothing listens on the SMTP port: every due row fails and waits.
        await poll(
            sync_to_async(Outbound.objects.filter(tries__gte=2, status="pending").exists),
            timeout=20,
        )
        assert (
            "ConnectionRefusedError"
            in (await sync_to_async(Outbound.objects.filter(tries__gte=2).first)()).last_error
        )
        server = SmtpServer()
        server.port = int(smtp_url.rsplit(":", 1)[1])
        server.controller.port = server.port
        await sync_to_async(server.start)()
        try:
            await poll(lambda: len(server.mails) == 6, timeout=30)
        finally:
            await sync_to_async(server.stop)()
    by_customer = {}
    for mail in server.mails:
        by_customer.setdefault(mail["To"], []).append(mail.get_content().strip())
    assert by_customer == {
        f"c{n}@customer.test": [f"c{n} step {step}" for step in range(3)] for n in range(2)
    }
    statuses = await sync_to_async(list)(Outbound.objects.values_list("status", flat=True))
    assert statuses == ["sent"] * 6


async def test_a_restart_sends_nothing_twice_and_takes_over_a_dead_process_s_rows(
    mail_inbox, fast_connectors
):
    server = SmtpServer()
    server.port = int(mail_inbox.settings["smtp_url"].rsplit(":", 1)[1])
    server.controller.port = server.port
    await sync_to_async(server.start)()
    try:
        conversation = await sync_to_async(mail_conversation)(mail_inbox)
        await sync_to_async(bot_says)(conversation, "first")
        async with running_connectors():
            await poll(lambda: len(server.mails) == 1, timeout=20)
        # A process that died while holding a row: its lease has run out.
        await sync_to_async(bot_says)(conversation, "second")
        await sync_to_async(Outbound.objects.filter(status="pending").update)(
            locked_until=timezone.now() - timedelta(seconds=1)
        )
        async with running_connectors():
            await poll(lambda: len(server.mails) == 2, timeout=20)
            await poll(
                sync_to_async(lambda: not Outbound.objects.filter(status="pending").exists())
            )
        assert [m.get_content().strip() for m in server.mails] == ["first", "second"]
        ids = [m["Message-ID"] for m in server.mails]
        stored = await sync_to_async(list)(
            Outbound.objects.order_by("id").values_list("external_id", flat=True)
        )
        assert ids == stored  # the Message-ID chosen when the row was written
    finally:
        await sync_to_async(server.stop)()


def test_a_failed_try_backs_off_and_the_last_one_is_dead(mail_inbox, settings):
    settings.CONNECTORS = {**settings.CONNECTORS, "MAX_ATTEMPTS": 2}
    conversation = mail_conversation(mail_inbox)
    bot_says(conversation, "x")
    row = Outbound.objects.get()
    assert services.outbound_failed(pk=row.pk, error="SMTPDataError: 451") == "retry"
    row.refresh_from_db()
    assert row.next_try_at > timezone.now() and row.last_error == "SMTPDataError: 451"
    assert services.outbound_failed(pk=row.pk, error="again") == "dead"
    assert services.outbound_resend(pks=[row.pk]) == 1
    row.refresh_from_db()
    assert (row.status, row.tries) == ("pending", 0)


def test_a_discarded_draft_is_never_sent_and_holds_up_nothing(mail_inbox):
    mail_inbox.bot_mode = Inbox.BotMode.DRAFT
    mail_inbox.save()
    conversation = mail_conversation(mail_inbox)
    draft = bot_says(conversation, "A draft.")
    assert Outbound.objects.get().status == "held"
    agent = get_user_model().objects.create_user("ana", first_name="Ana", is_staff=True)
    agent_services.draft_decide(
        conversation_id=conversation.pk, message_id=draft.pk, agent=agent, send=False
    )
    assert Outbound.objects.get(message=draft).status == "discarded"
    draft.refresh_from_db()
    assert draft.metadata["draft"] == "discarded"
    assert conversation.messages.filter(
        role="system", text="Ana discarded the bot's draft."
    ).exists()
    with pytest.raises(agent_services.NotAllowed):
        agent_services.draft_decide(
            conversation_id=conversation.pk, message_id=draft.pk, agent=agent, send=True
        )
    # An agent's own reply is no draft, and is not held up behind one.
    agent_services.takeover(conversation_id=conversation.pk, agent=agent)
    agent_services.reply(conversation_id=conversation.pk, agent=agent, text="Here I am.")
    assert Outbound.objects.filter(status="pending").count() == 1
    assert list(selectors.deliverable(timezone.now()).values_list("message__text", flat=True)) == [
        "Here I am."
    ]
