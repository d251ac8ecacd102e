"""The pieces in the order the desk's integration calls them, against the stand-in playing
WeCom: callback → sync from the stored cursor → customer turns → the window → send → hand-off."""

from datetime import UTC, datetime

from connectors.wecom import callback
from connectors.wecom.client import STATE_SERVICER, Menu, MenuClick
from connectors.wecom.messages import CustomerTurn, SessionEntered, to_desk
from connectors.wecom.texts import split_text
from connectors.wecom.window import Refusal, ReplyWindow

from .conftest import CUSTOMER, KF


async def _sync(client, cursor: str, token: str, open_kfid: str):
    items = []
    async for page in client.sync_pages(cursor=cursor, token=token, open_kfid=open_kfid):
        items += [to_desk(message) for message in page.messages]
        cursor = page.next_cursor  # stored after each page
    return items, cursor


async def test_a_customer_is_answered_then_handed_to_a_servicer(standin, client, desk_crypto):
    standin.event("enter_session", KF, CUSTOMER, scene="site")
    standin.customer_says(KF, CUSTOMER, "我的订单什么时候到？")

    # WeCom POSTs the callback; the view reads it and the sync takes over.
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    event = callback.parse_callback(desk_crypto, body=body, **query)
    items, cursor = await _sync(client, "", event.token, event.open_kfid)
    entered, question = items
    assert isinstance(entered, SessionEntered) and isinstance(question, CustomerTurn)
    window = ReplyWindow().customer_wrote(datetime.fromtimestamp(question.send_time, UTC))

    # The bot's answer is longer than one text: it goes in pieces, each counted.
    answer = "您的订单已经发货，预计三天内送达。" * 60
    state = await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    for piece in split_text(answer):
        now = datetime.fromtimestamp(standin.now(), UTC)
        assert window.verdict(now=now, service_state=state.state).allowed
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content=piece)
        window = window.sent()
    await client.send_menu(
        open_kfid=KF,
        external_userid=CUSTOMER,
        menu=Menu(head="Anything else?", items=[MenuClick(id="human", content="转人工")]),
    )
    window = window.sent()
    assert "".join(sent["text"]["content"] for sent in standin.sent[:2]) == answer

    # The customer clicks "talk to a person": the next callback brings the click.
    standin.customer_says(KF, CUSTOMER, "转人工", menu_id="human")
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    event = callback.parse_callback(desk_crypto, body=body, **query)
    items, cursor = await _sync(client, cursor, event.token, event.open_kfid)
    assert [(item.text, item.menu_id) for item in items] == [("转人工", "human")]

    await client.service_state_trans(
        open_kfid=KF,
        external_userid=CUSTOMER,
        service_state=STATE_SERVICER,
        servicer_userid="zhangsan",
    )
    state = await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    window = window.customer_wrote(datetime.fromtimestamp(items[0].send_time, UTC))
    verdict = window.verdict(
        now=datetime.fromtimestamp(standin.now(), UTC), service_state=state.state
    )
    assert verdict.refusal is Refusal.NOT_WITH_BOT  # the bot falls silent

    # The servicer answers in the WeCom client: it comes back as the transcript's, not a turn.
    standin.servicer_says(KF, CUSTOMER, "zhangsan", "您好，我来帮您查一下。")
    items, cursor = await _sync(client, cursor, "", KF)
    assert [type(item).__name__ for item in items] == ["ServicerMessage"]
