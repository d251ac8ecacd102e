"""WeCom end to end: WeCom's signed, encrypted callback reaches the desk's URL, the connectors
process pulls the message with sync_msg from the stand-in, a real inference worker answers
through the widget's answer path, and the answer goes out with send_msg (with the "talk to a
person" menu); the customer's click hands off, an agent takes over in the console and the
reply goes out the same way; a restart of the process sends nothing again and takes nothing
twice. A reply WeCom's window no longer allows fails at once, for good, and staff see why."""

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from agents import services as agent_services
from chat.models import Conversation, Inbox, Message
from connectors.models import Outbound
from connectors.wecom.account import HUMAN_MENU_ID, callback_path
from connectors.wecom.models import WeComAccount, WeComCustomer
from tests.waiting import poll

from .conftest import CUSTOMER, KF, running_connectors

pytestmark = pytest.mark.django_db(transaction=True)
REPLY = "Hello! How can I help you today?"  # the synthetic engine's answer


async def wecom_calls_back(inbox, standin, crypto) -> None:
    """WeCom POSTs kf_msg_or_event to the desk's callback URL, as it does on news."""
    query, body = standin.callback_request(crypto, open_kfid=KF)
    response = await sync_to_async(Client().post)(
        f"{callback_path(inbox.pk)}?{urlencode(query)}", data=body, content_type="text/xml"
    )
    assert (response.status_code, response.content) == (200, b"success")


def texts_sent(standin) -> list[str]:
    return [sent["text"]["content"] for sent in standin.sent if sent["msgtype"] == "text"]


def synced(inbox):
    """The sync WeCom's callback asked for is done (its token spent)."""
    return sync_to_async(
        lambda: not WeComAccount.objects.filter(inbox=inbox).exclude(sync_token="").exists()
    )


async def test_a_wechat_customer_is_answered_then_an_agent_takes_over(
    wecom_inbox, standin, desk_crypto, worker, fast_connectors
):
    standin.event("enter_session", KF, CUSTOMER, scene="site")
    standin.customer_says(KF, CUSTOMER, "Where is my order A1002?")
    await wecom_calls_back(wecom_inbox, standin, desk_crypto)

    async with running_connectors():
        await poll(lambda: len(standin.sent) >= 2, timeout=30)
        answer, menu = standin.sent[:2]
        assert (answer["touser"], answer["open_kfid"]) == (CUSTOMER, KF)
        bot = await sync_to_async(Message.objects.get)(role="bot")
        assert answer["text"]["content"] == bot.text and bot.text.startswith(REPLY)
        row = await sync_to_async(Outbound.objects.get)()
        assert answer["msgid"] == f"desk{row.pk}p0"  # made from the outbox row: sent once
        assert menu["msgtype"] == "msgmenu"
        assert menu["msgmenu"]["list"][0]["click"]["id"] == HUMAN_MENU_ID

        conversation = await sync_to_async(Conversation.objects.get)()
        assert (conversation.channel, conversation.inbox_id, conversation.contact) == (
            "wecom",
            wecom_inbox.pk,
            CUSTOMER,
        )
        question = await sync_to_async(Message.objects.get)(role="customer")
        assert question.text == "Where is my order A1002?"

        # The customer clicks "talk to a person": the click comes back through sync_msg.
        standin.customer_says(KF, CUSTOMER, "Talk to a person", menu_id=HUMAN_MENU_ID)
        await wecom_calls_back(wecom_inbox, standin, desk_crypto)
        await poll(
            sync_to_async(Conversation.objects.filter(status=Conversation.Status.WAITING).exists),
            timeout=30,
        )

        # An agent takes over in the console and replies: it goes out with send_msg.
        agent = await sync_to_async(get_user_model().objects.create_user)(
            "ana", first_name="Ana", is_staff=True
        )
        await sync_to_async(agent_services.takeover)(conversation_id=conversation.pk, agent=agent)
        await sync_to_async(agent_services.reply)(
            conversation_id=conversation.pk, agent=agent, text="I checked: it ships today."
        )
        await poll(lambda: len(standin.sent) >= 3, timeout=30)
    assert texts_sent(standin) == [bot.text, "I checked: it ships today."]
    assert await sync_to_async(Message.objects.filter(role="bot").count)() == 1  # click unanswered

    # A restart that lost its cursor (a crash mid-page) reads everything again, and WeCom
    # calls back once more: nothing is taken twice, nothing is sent again.
    sent_before = list(standin.sent)
    await sync_to_async(WeComAccount.objects.filter(inbox=wecom_inbox).update)(cursor="")
    await wecom_calls_back(wecom_inbox, standin, desk_crypto)
    async with running_connectors():
        await poll(synced(wecom_inbox), timeout=30)
    assert standin.sent == sent_before
    assert await sync_to_async(Message.objects.filter(role="customer").count)() == 2
    rows = await sync_to_async(list)(Outbound.objects.values_list("status", "tries"))
    assert rows == [("sent", 1), ("sent", 1)]


async def test_a_reply_outside_wecom_s_window_fails_at_once_with_the_reason(
    wecom_inbox, standin, desk_crypto, fast_connectors
):
    wecom_inbox.bot_mode = Inbox.BotMode.SILENT  # an agent answers; no bot needed
    await sync_to_async(wecom_inbox.save)()
    standin.customer_says(KF, CUSTOMER, "还有货吗？")
    await wecom_calls_back(wecom_inbox, standin, desk_crypto)
    async with running_connectors():
        await poll(synced(wecom_inbox), timeout=30)
        conversation = await sync_to_async(Conversation.objects.get)()
        agent = await sync_to_async(get_user_model().objects.create_user)("ana", is_staff=True)
        await sync_to_async(agent_services.takeover)(conversation_id=conversation.pk, agent=agent)

        # Two days pass before the agent answers.
        standin.advance(49 * 3600)
        await sync_to_async(WeComCustomer.objects.filter(external_userid=CUSTOMER).update)(
            last_customer_message_at=timezone.now() - timedelta(hours=49)
        )
        await sync_to_async(agent_services.reply)(
            conversation_id=conversation.pk, agent=agent, text="有货，今天发。"
        )
        await poll(sync_to_async(Outbound.objects.filter(status="dead").exists), timeout=30)
    row = await sync_to_async(Outbound.objects.get)()
    assert row.tries == 1  # never tried again: it could not succeed
    assert "more than 48 hours ago" in row.last_error
    assert standin.sent == []
    note = await sync_to_async(Message.objects.filter(role="system").last)()
    assert note.text.startswith("Not sent through WeCom: the customer last wrote more than 48")


async def test_a_long_reply_goes_in_pieces_and_a_retry_sends_only_what_is_missing(
    wecom_inbox, standin, desk_crypto, fast_connectors
):
    wecom_inbox.bot_mode = Inbox.BotMode.SILENT
    await sync_to_async(wecom_inbox.save)()
    standin.customer_says(KF, CUSTOMER, "退货流程是什么？")
    await wecom_calls_back(wecom_inbox, standin, desk_crypto)
    standin.send_failures = {2: -1}  # WeCom is busy for the second piece
    long_reply = "请先在订单页申请退货，我们会在一个工作日内审核。" * 60  # over 2048 bytes
    async with running_connectors():
        await poll(synced(wecom_inbox), timeout=30)
        conversation = await sync_to_async(Conversation.objects.get)()
        agent = await sync_to_async(get_user_model().objects.create_user)("ana", is_staff=True)
        await sync_to_async(agent_services.takeover)(conversation_id=conversation.pk, agent=agent)
        await sync_to_async(agent_services.reply)(
            conversation_id=conversation.pk, agent=agent, text=long_reply
        )
        await poll(sync_to_async(Outbound.objects.filter(status="sent").exists), timeout=30)
    row = await sync_to_async(Outbound.objects.get)()
    assert row.tries == 2  # the busy answer was tried again after the backoff
    pieces = texts_sent(standin)
    assert "".join(pieces) == long_reply  # each piece once: none sent again by the retry
    assert len(pieces) == 3 and all(len(text.encode()) <= 2048 for text in pieces)
    assert [sent["msgid"] for sent in standin.sent] == [f"desk{row.pk}p{n}" for n in range(3)]
    window = await sync_to_async(WeComCustomer.objects.get)(external_userid=CUSTOMER)
    assert window.sent_since == 3  # each piece is one of the window's 5


async def test_news_whose_callback_was_lost_is_read_by_the_next_look(
    wecom_inbox, standin, fast_connectors
):
    wecom_inbox.bot_mode = Inbox.BotMode.SILENT
    await sync_to_async(wecom_inbox.save)()
    # Read a while ago; WeCom's callback for this message never arrived.
    await sync_to_async(WeComAccount.objects.create)(
        inbox=wecom_inbox, synced_at=timezone.now() - timedelta(minutes=2)
    )
    standin.customer_says(KF, CUSTOMER, "有人吗？")
    async with running_connectors():
        await poll(sync_to_async(Message.objects.filter(role="customer").exists), timeout=30)
    reads = [body for path, body in standin.calls if path.endswith("/sync_msg")]
    assert reads and "token" not in reads[0]
    account = await sync_to_async(WeComAccount.objects.get)(inbox=wecom_inbox)
    assert account.synced_at > timezone.now() - timedelta(minutes=1)
