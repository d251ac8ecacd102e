"""Reading a WeCom account into the desk (sync_msg from the stored cursor, against the
stand-in): each customer message becomes one customer turn of the customer's conversation,
never two, however often a page is read again; the cursor is kept; a servicer taking the
customer in WeCom's client silences the bot on the desk; a hand-off on the desk of an inbox
handing over to WeCom moves the session to the servicer and tells the customer."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async

from chat import services as chat_services
from chat.models import Conversation, Inbox, Message
from connectors.models import Inbound
from connectors.wecom import account, callback, handover
from connectors.wecom.models import WeComAccount, WeComCustomer
from connectors.wecom.syncing import sync_account

from .conftest import CUSTOMER, KF

pytestmark = pytest.mark.django_db(transaction=True)
OTHER = "wmstandincustomer02"


@pytest.fixture
def silent_inbox(wecom_inbox):
    """The bot never answers here: what is taken in waits for an agent (no worker needed)."""
    wecom_inbox.bot_mode = Inbox.BotMode.SILENT
    wecom_inbox.save()
    return wecom_inbox


@pytest.fixture
async def desk_client(silent_inbox):
    client = account.client_for(silent_inbox, timeout=5.0)
    yield client
    await account.close_clients()


def customer_texts(contact=CUSTOMER) -> list[str]:
    return list(
        Message.objects.filter(role="customer", conversation__contact=contact)
        .order_by("pk")
        .values_list("text", flat=True)
    )


async def test_each_message_is_taken_once_in_the_customer_s_conversation(
    silent_inbox, standin, desk_client, desk_crypto
):
    standin.event("enter_session", KF, CUSTOMER, scene="site")
    first = standin.customer_says(KF, CUSTOMER, "我的订单什么时候到？")
    standin.customer_says(KF, OTHER, "Do you ship to Macau?")
    standin.customer_says(KF, CUSTOMER, "订单号 A1002")
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    token = callback.parse_callback(desk_crypto, body=body, **query).token
    await sync_to_async(WeComAccount.objects.create)(inbox=silent_inbox, sync_token=token)

    answers: set = set()
    await sync_account(silent_inbox, desk_client, token=token, answers=answers)

    assert await sync_to_async(customer_texts)() == ["我的订单什么时候到？", "订单号 A1002"]
    assert await sync_to_async(customer_texts)(OTHER) == ["Do you ship to Macau?"]
    conversation = await sync_to_async(Conversation.objects.get)(contact=CUSTOMER)
    assert (conversation.channel, conversation.inbox_id) == ("wecom", silent_inbox.pk)
    assert conversation.language == "zh" and conversation.status == "waiting"
    stored = await sync_to_async(WeComAccount.objects.get)(inbox=silent_inbox)
    assert stored.cursor and stored.sync_token == ""  # the token is spent
    assert await sync_to_async(Inbound.objects.filter(external_id=first).count)() == 1
    window = await sync_to_async(WeComCustomer.objects.get)(external_userid=CUSTOMER)
    assert window.last_customer_message_at is not None and window.service_state == 0

    # A restart that lost the cursor reads everything again: nothing is taken twice.
    await sync_to_async(WeComAccount.objects.filter(inbox=silent_inbox).update)(cursor="")
    await sync_account(silent_inbox, desk_client, token="", answers=answers)
    assert await sync_to_async(customer_texts)() == ["我的订单什么时候到？", "订单号 A1002"]
    assert await sync_to_async(Conversation.objects.count)() == 2

    # Read on from the cursor: only what is new comes, into the same conversation.
    calls_before = len(standin.calls)
    standin.customer_says(KF, CUSTOMER, "还在吗？")
    await sync_account(silent_inbox, desk_client, token="", answers=answers)
    sync_calls = [body for path, body in standin.calls[calls_before:] if "sync_msg" in path]
    assert sync_calls[0]["cursor"] == stored.cursor
    assert (await sync_to_async(customer_texts)())[-1] == "还在吗？"
    assert await sync_to_async(Conversation.objects.count)() == 2


async def test_what_was_written_before_the_inbox_was_connected_is_left(
    silent_inbox, standin, desk_client
):
    standin.customer_says(KF, CUSTOMER, "上周的问题")
    later = silent_inbox.created + timedelta(minutes=5)  # as if connected after it
    await sync_to_async(Inbox.objects.filter(pk=silent_inbox.pk).update)(created=later)
    await sync_to_async(silent_inbox.refresh_from_db)()
    await sync_account(silent_inbox, desk_client, token="", answers=set())
    assert await sync_to_async(Message.objects.count)() == 0
    standin.customer_says(KF, CUSTOMER, "现在的问题")
    standin.advance(10 * 60)  # now after the inbox was connected
    standin.customer_says(KF, CUSTOMER, "还在吗")
    await sync_account(silent_inbox, desk_client, token="", answers=set())
    assert await sync_to_async(customer_texts)() == ["还在吗"]


async def test_a_servicer_taking_the_customer_in_wecom_silences_the_bot(
    silent_inbox, standin, desk_client
):
    conversation, _ = await sync_to_async(chat_services.conversation_start)(
        site=silent_inbox.site, channel="wecom", inbox=silent_inbox, contact=CUSTOMER
    )
    standin.event(
        "session_status_change", KF, CUSTOMER, change_type=1, new_servicer_userid="zhangsan"
    )
    standin.servicer_says(KF, CUSTOMER, "zhangsan", "您好，我来帮您查一下。")
    await sync_account(silent_inbox, desk_client, token="", answers=set())

    await sync_to_async(conversation.refresh_from_db)()
    assert conversation.status == Conversation.Status.WAITING  # the bot is silent
    notes = await sync_to_async(list)(
        Message.objects.filter(conversation=conversation, role="system").values_list(
            "text", flat=True
        )
    )
    assert any("zhangsan took this customer" in note for note in notes)
    assert any("您好，我来帮您查一下。" in note for note in notes)
    known = await sync_to_async(WeComCustomer.objects.get)(external_userid=CUSTOMER)
    assert (known.service_state, known.servicer_userid) == (3, "zhangsan")

    # Read again: the servicer's line is in the transcript once.
    await sync_to_async(WeComAccount.objects.filter(inbox=silent_inbox).update)(cursor="")
    await sync_account(silent_inbox, desk_client, token="", answers=set())
    assert (
        await sync_to_async(Message.objects.filter(role="system", text__contains="查一下").count)()
        == 1
    )

    # The servicer ends the session in WeCom: the conversation left to them ends too, and the
    # customer's next message starts a new one.
    standin.event("session_status_change", KF, CUSTOMER, change_type=3)
    await sync_account(silent_inbox, desk_client, token="", answers=set())
    await sync_to_async(conversation.refresh_from_db)()
    assert conversation.status == Conversation.Status.CLOSED
    known = await sync_to_async(WeComCustomer.objects.get)(external_userid=CUSTOMER)
    assert known.service_state == 4
    standin.customer_says(KF, CUSTOMER, "又有一个问题")
    await sync_account(silent_inbox, desk_client, token="", answers=set())
    latest = await sync_to_async(Conversation.objects.exclude(pk=conversation.pk).get)()
    assert latest.contact == CUSTOMER
    assert (
        await sync_to_async(WeComCustomer.objects.get)(external_userid=CUSTOMER)
    ).service_state == 0


async def test_a_hand_off_goes_to_the_wecom_servicer_when_the_inbox_says_so(
    silent_inbox, standin, desk_client
):
    silent_inbox.settings = {
        **silent_inbox.settings,
        "handover": "wecom",
        "servicer_userid": "zhangsan",
    }
    await sync_to_async(silent_inbox.save)()
    standin.customer_says(KF, CUSTOMER, "我要退货")
    # The silent inbox hands every new conversation off: to WeCom's servicer, here.
    await sync_account(silent_inbox, desk_client, token="", answers=set())
    pending = await sync_to_async(WeComCustomer.objects.get)(external_userid=CUSTOMER)
    assert pending.handover_pending
    await handover.carry_out(silent_inbox, desk_client)

    session = standin.session(KF, CUSTOMER)
    assert (session.state, session.servicer_userid) == (3, "zhangsan")
    assert [sent["text"]["content"] for sent in standin.sent] == [handover.TELL_CUSTOMER["zh"]]
    done = await sync_to_async(WeComCustomer.objects.get)(external_userid=CUSTOMER)
    assert (done.handover_pending, done.service_state, done.sent_since) == (False, 3, 1)
    assert not (await sync_to_async(WeComAccount.objects.get)(inbox=silent_inbox)).handovers_pending
    assert await sync_to_async(
        Message.objects.filter(role="system", text__startswith="Passed to WeCom servicer").exists
    )()
