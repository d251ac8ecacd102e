"""The API client against the stand-in of WeCom: the token, paging, sending, and the session."""

import asyncio
import logging
import socket

import pytest

from connectors.wecom.client import (
    STATE_BOT,
    STATE_ENDED,
    STATE_SERVICER,
    Menu,
    MenuClick,
    WeComAPIError,
    WeComClient,
    WeComUnavailable,
)
from connectors.wecom.messages import CustomerTurn, SessionEntered, to_desk

from .conftest import CUSTOMER, KF


async def test_the_token_is_fetched_once_and_reused(client, standin):
    await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    assert standin.token_requests == 1 and client.token_fetches == 1
    assert len(standin.calls) == 2


async def test_concurrent_callers_fetch_the_token_once(client, standin):
    await asyncio.gather(
        *(client.service_state_get(open_kfid=KF, external_userid=CUSTOMER) for _ in range(20))
    )
    assert standin.token_requests == 1
    assert len(standin.calls) == 20


async def test_the_token_is_renewed_before_it_expires(client, standin, clock):
    first = await client.access_token()
    clock.now += 7200 - 300 - 1  # just inside the margin before WeCom's 2 hours end
    assert await client.access_token() == first
    assert standin.token_requests == 1
    clock.now += 2  # within 5 minutes of the end: fetched again
    await client.access_token()
    assert standin.token_requests == 2


async def test_a_token_wecom_invalidated_early_is_replaced_and_the_call_tried_once_more(
    client, standin
):
    await client.access_token()
    standin.expire_tokens()
    state = await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    assert state.state == STATE_ENDED
    assert standin.token_requests == 2
    # The refused call and the one that went through.
    assert [path for path, _body in standin.calls] == ["/cgi-bin/kf/service_state/get"] * 2


async def test_a_token_refused_twice_raises_rather_than_loops(standin, clock):
    standin.token_ttl = 0  # every token WeCom hands out is already expired
    client = WeComClient(
        corp_id=standin.corp_id,
        corp_secret=standin.corp_secret,
        base_url=standin.base_url,
        clock=clock,
    )
    async with client:
        with pytest.raises(WeComAPIError) as raised:
            await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    assert raised.value.errcode == 42001
    assert len(standin.calls) == 2


async def test_a_wrong_secret_raises_and_never_shows_the_secret(standin, clock):
    secret = "wrong-secret-do-not-print"
    client = WeComClient(
        corp_id=standin.corp_id, corp_secret=secret, base_url=standin.base_url, clock=clock
    )
    async with client:
        with pytest.raises(WeComAPIError) as raised:
            await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="hi")
    assert raised.value.errcode == 40001 and raised.value.path == "/cgi-bin/gettoken"
    assert secret not in str(raised.value) and secret not in repr(client)
    assert standin.calls == []  # nothing was sent without a token


async def test_no_secret_reaches_the_logs(client, standin, caplog):
    # The project keeps httpx at WARNING; a deployment that turns it up must still be safe.
    for name in ("httpx", "httpcore", "connectors"):
        caplog.set_level(logging.DEBUG, logger=name)
    token = await client.access_token()
    await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    standin.expire_tokens()
    await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    logged = caplog.text
    assert "HTTP Request" in logged  # httpx did log the requests…
    assert "access_token=[redacted]" in logged and "corpsecret=[redacted]" in logged
    assert token not in logged and standin.corp_secret not in logged  # …without the secrets


async def test_messages_are_read_page_by_page_until_there_are_no_more(client, standin):
    sent = [standin.customer_says(KF, CUSTOMER, f"question {n}") for n in range(5)]
    pages = [page async for page in client.sync_pages(open_kfid=KF, limit=2)]
    assert [len(page.messages) for page in pages] == [2, 2, 1]
    assert [page.has_more for page in pages] == [True, True, False]
    assert [m.msgid for page in pages for m in page.messages] == sent
    assert [m.text for m in pages[0].messages] == ["question 0", "question 1"]
    # The last cursor, stored, reads only what came after it.
    cursor = pages[-1].next_cursor
    later = standin.customer_says(KF, CUSTOMER, "one more")
    page = await client.sync_msg(cursor=cursor, open_kfid=KF)
    assert [m.msgid for m in page.messages] == [later] and not page.has_more
    empty = await client.sync_msg(cursor=page.next_cursor, open_kfid=KF)
    assert empty.messages == [] and empty.next_cursor == page.next_cursor


async def test_the_callbacks_token_is_passed_to_sync_msg(client, standin, desk_crypto):
    from connectors.wecom.callback import parse_callback

    standin.customer_says(KF, CUSTOMER, "hello")
    query, body = standin.callback_request(desk_crypto, open_kfid=KF)
    event = parse_callback(desk_crypto, body=body, **query)
    page = await client.sync_msg(token=event.token, open_kfid=event.open_kfid)
    assert [to_desk(m).text for m in page.messages] == ["hello"]
    assert standin.calls[-1][1]["token"] == event.token
    with pytest.raises(WeComAPIError) as raised:
        await client.sync_msg(token="ENCnot-a-token", open_kfid=KF)
    assert raised.value.errcode == 95007


async def test_the_reply_window_is_enforced_and_its_errors_raised(client, standin):
    with pytest.raises(WeComAPIError) as raised:
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="unasked")
    assert raised.value.errcode == 95018  # no session: the customer never wrote

    standin.customer_says(KF, CUSTOMER, "hello?")
    for n in range(5):
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content=f"answer {n}")
    with pytest.raises(WeComAPIError) as raised:
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="a sixth")
    assert raised.value.errcode == 95001
    assert [m["text"]["content"] for m in standin.sent] == [f"answer {n}" for n in range(5)]

    standin.customer_says(KF, CUSTOMER, "still there?")
    await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="yes")
    standin.advance(48 * 3600)
    with pytest.raises(WeComAPIError) as raised:
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="too late")
    assert raised.value.errcode == 95002


async def test_a_given_msgid_is_sent_and_returned(client, standin):
    standin.customer_says(KF, CUSTOMER, "hello")
    msgid = await client.send_text(
        open_kfid=KF, external_userid=CUSTOMER, content="hi", msgid="outbox_17"
    )
    assert msgid == "outbox_17" and standin.sent[-1]["msgid"] == "outbox_17"


async def test_a_menu_is_sent_and_a_click_comes_back_with_its_id(client, standin):
    standin.customer_says(KF, CUSTOMER, "I need help")
    menu = Menu(
        head="Did that answer your question?",
        items=[
            MenuClick(id="solved", content="Yes, thanks"),
            MenuClick(id="human", content="Talk to a person"),
        ],
        tail="You can also just write.",
    )
    await client.send_menu(open_kfid=KF, external_userid=CUSTOMER, menu=menu)
    assert standin.sent[-1]["msgtype"] == "msgmenu"
    assert standin.sent[-1]["msgmenu"] == {
        "head_content": "Did that answer your question?",
        "list": [
            {"type": "click", "click": {"id": "solved", "content": "Yes, thanks"}},
            {"type": "click", "click": {"id": "human", "content": "Talk to a person"}},
        ],
        "tail_content": "You can also just write.",
    }
    standin.customer_says(KF, CUSTOMER, "Talk to a person", menu_id="human")
    page = await client.sync_msg(open_kfid=KF)
    clicked = to_desk(page.messages[-1])
    assert isinstance(clicked, CustomerTurn) and clicked.menu_id == "human"


async def test_a_session_is_handed_to_a_servicer_and_the_bot_falls_silent(client, standin):
    standin.customer_says(KF, CUSTOMER, "human please")
    assert (await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)).state == 0
    await client.service_state_trans(
        open_kfid=KF,
        external_userid=CUSTOMER,
        service_state=STATE_SERVICER,
        servicer_userid="zhangsan",
    )
    state = await client.service_state_get(open_kfid=KF, external_userid=CUSTOMER)
    assert (state.state, state.servicer_userid) == (STATE_SERVICER, "zhangsan")
    with pytest.raises(WeComAPIError) as raised:
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="bot again")
    assert raised.value.errcode == 95018
    # Back to the bot is not a move WeCom allows from a servicer; ending the session is.
    with pytest.raises(WeComAPIError) as raised:
        await client.service_state_trans(
            open_kfid=KF, external_userid=CUSTOMER, service_state=STATE_BOT
        )
    assert raised.value.errcode == 95016
    code = await client.service_state_trans(
        open_kfid=KF, external_userid=CUSTOMER, service_state=STATE_ENDED
    )
    assert code  # one closing message may go with it
    await client.send_on_event(code=code, content="Thanks for writing to us.")
    assert standin.sent[-1]["code"] == code


async def test_an_unknown_servicer_is_refused(client, standin):
    standin.customer_says(KF, CUSTOMER, "human please")
    with pytest.raises(WeComAPIError) as raised:
        await client.service_state_trans(
            open_kfid=KF,
            external_userid=CUSTOMER,
            service_state=STATE_SERVICER,
            servicer_userid="nobody",
        )
    assert raised.value.errcode == 95014
    with pytest.raises(ValueError):
        await client.service_state_trans(
            open_kfid=KF, external_userid=CUSTOMER, service_state=STATE_SERVICER
        )


async def test_the_welcome_code_allows_one_welcome(client, standin):
    standin.event("enter_session", KF, CUSTOMER, scene="shop")
    page = await client.sync_msg(open_kfid=KF)
    entered = to_desk(page.messages[-1])
    assert isinstance(entered, SessionEntered) and entered.scene == "shop"
    await client.send_on_event(code=entered.welcome_code, content="Welcome! Ask me anything.")
    assert standin.sent[-1]["text"] == {"content": "Welcome! Ask me anything."}
    with pytest.raises(WeComAPIError):
        await client.send_on_event(code=entered.welcome_code, content="Welcome again")


async def test_arguments_wecom_would_refuse_are_refused_before_any_call(client, standin):
    with pytest.raises(ValueError, match="2048"):
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="字" * 683)
    with pytest.raises(ValueError, match="1 to 10 items"):
        await client.send_menu(
            open_kfid=KF,
            external_userid=CUSTOMER,
            menu=Menu(head="", items=[MenuClick(id=str(n), content="x") for n in range(11)]),
        )
    with pytest.raises(ValueError, match="msgid"):
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="x", msgid="a b")
    with pytest.raises(ValueError, match="limit"):
        await client.sync_msg(limit=1001)
    assert standin.calls == []


async def test_an_unreachable_wecom_raises_unavailable(clock):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    client = WeComClient(
        corp_id="ww1",
        corp_secret="unreachable-secret",
        base_url=f"http://127.0.0.1:{port}",
        clock=clock,
    )
    async with client:
        with pytest.raises(WeComUnavailable) as raised:
            await client.access_token()
    assert str(raised.value) == "WeCom /cgi-bin/gettoken: ConnectError"  # not the URL
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_an_empty_page_that_has_more_does_not_end_the_reading(client, standin):
    standin.customer_says(KF, CUSTOMER, "first")
    standin.empty_page_next = True
    pages = [page async for page in client.sync_pages(open_kfid=KF)]
    assert [len(page.messages) for page in pages] == [0, 1]
    assert pages[1].messages[0].text == "first"


async def test_items_without_their_common_fields_are_skipped_and_counted(client, standin):
    standin.customer_says(KF, CUSTOMER, "fine")
    standin.raw_item({"origin": 3, "msgtype": "text", "text": {"content": "no msgid"}})
    page = await client.sync_msg()
    assert [m.text for m in page.messages] == ["fine"] and page.skipped == 1


async def test_errors_say_whether_to_retry_or_give_up_on_the_message(client, standin):
    standin.customer_says(KF, CUSTOMER, "hi")
    standin.advance(48 * 3600)
    with pytest.raises(WeComAPIError) as raised:
        await client.send_text(open_kfid=KF, external_userid=CUSTOMER, content="late")
    assert raised.value.reply_refused and not raised.value.retryable
