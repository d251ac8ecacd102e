"""Action calls as customers and staff see them: the `action` frame (docs/protocol.md) drawn by
the built widget (static/widget/widget.js) and by the built console (static/agents/console.js)
in a real Chromium, and the console's server-rendered line for a stored call
(templates/agents/_action_call.html).

The widget tests run against the FAKE DESK of test_client_widget.py, which scripts the
frames; the console test INJECTS conv.bot frames into the real console socket of the
synthetic stack, as test_client_console.py does. Neither path makes a real call to a back end:
what is tested is what a person sees and what the browser sends back."""

import asyncio
import json
import re
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.template import Context, Template
from django.template.loader import render_to_string
from playwright.async_api import expect

from chat import services as chat_services
from tests.e2e.test_client_console import agent_page
from tests.e2e.test_client_widget import CONFIG, FakeDesk, fake_desk
from tests.e2e.test_widget import Visitor

pytestmark = [pytest.mark.e2e]

HOSTILE = "<img src=x onerror=window.__xss=1>"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 700}


def action(call_id: int, status: str, **fields) -> dict:
    """An `action` frame as the server sends it; `fields` overrides any key."""
    return {
        "type": "action",
        "call_id": call_id,
        "name": "order_status",
        "label": "Order status",
        "status": status,
        "text": "",
        "fields": {},
        "arguments": {"order_id": "A1001"},
        "latency_ms": None,
        "confirm_text": "",
        **fields,
    }


SHIPPED = action(
    12,
    "ok",
    text="Order A1001: shipped with DHL, due 2026-12-09",
    fields={"order_id": "A1001", "status": "shipped", "carrier": "DHL", "eta": "2026-12-09"},
    latency_ms=84,
)


def cancel_order(call_id: int, status: str, **fields) -> dict:
    return action(
        call_id,
        status,
        **{
            "name": "cancel_order",
            "label": "Cancel order",
            "arguments": {"order_id": "A1002"},
            "confirm_text": "Cancel order A1002?",
            **fields,
        },
    )


async def chatting(browser, desk: FakeDesk, viewport: dict = DESKTOP) -> Visitor:
    """A visitor on the fake shop's page with the chat open and one message sent."""
    context = await browser.new_context(viewport=viewport)
    visitor = Visitor(await context.new_page())
    await visitor.page.goto(desk.url + "/page.html")
    await visitor.open_widget()
    await asyncio.wait_for(desk.connected.wait(), 10)
    await visitor.page.locator("textarea").first.fill("Where is my order A1001?")
    await visitor.page.keyboard.press("Enter")
    await desk.wait_for("message")
    return visitor


def sent(desk: FakeDesk, kind: str) -> list[dict]:
    return [frame for frame in desk.received if frame["type"] == kind]


# --- The widget -------------------------------------------------------------------------------


async def test_an_ok_card_shows_its_text_and_fields_before_the_answer_fake_desk(browser):
    async with fake_desk() as desk:
        visitor = await chatting(browser, desk, PHONE)
        page = visitor.page
        await desk.send(SHIPPED)
        await desk.answer(20, ["It is on its way."])
        await expect(page.locator(".ac")).to_have_count(1)
        card = page.locator(".ac").first
        await expect(card.locator(".who")).to_have_text("Order status")
        await expect(card.locator("> div")).to_have_text(SHIPPED["text"])
        await expect(card.locator("dt")).to_have_text(["Order id", "Status", "Carrier", "Eta"])
        await expect(card.locator("dd")).to_have_text(["A1001", "shipped", "DHL", "2026-12-09"])
        await expect(card).to_have_attribute("data-s", "ok")
        # Nothing else in the card: the label, the text, the list.
        assert await card.evaluate("c => c.textContent") == (
            "Order status" + SHIPPED["text"] + "Order idA1001StatusshippedCarrierDHLEta2026-12-09"
        )
        assert "x" not in (await card.get_attribute("class")).split()
        assert await card.locator("button").count() == 0
        # The card comes before the answer it told of, and both are in the log.
        order = await page.locator(".lg > li").evaluate_all("lis => lis.map(li => li.className)")
        assert order[-2:] == ["ac", "m b"], order

        # On a phone the panel fills the screen and the card fits in it.
        panel = await page.locator(".p").bounding_box()
        box = await card.bounding_box()
        assert panel["width"] == PHONE["width"]
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert await card.evaluate("c => c.scrollWidth <= c.clientWidth")

        # A failure's text is a notice; no label falls back to "Looked up"; no more than six
        # field rows, and no key/value list for a call that did not succeed.
        await desk.send(
            action(
                13,
                "timeout",
                label="",
                text="The order system took too long to answer.",
                fields={"a": "1"},
            )
        )
        failed = page.locator('.ac[data-s="timeout"]')
        await expect(failed).to_have_class(re.compile(r"\bx\b"))
        await expect(failed.locator(".who")).to_have_text("Looked up")
        await expect(failed.locator("> div")).to_have_text(
            "The order system took too long to answer."
        )
        assert await failed.locator("dl").count() == 0
        notice = await failed.evaluate("c => getComputedStyle(c).backgroundColor")
        plain = await card.evaluate("c => getComputedStyle(c).backgroundColor")
        assert notice != plain
        many = {f"field_{i}": str(i) for i in range(9)}
        await desk.send(action(14, "ok", text="Many", fields=many))
        await expect(page.locator('.ac[data-s="ok"]').last.locator("dt")).to_have_count(6)
        await expect(page.locator(".ac")).to_have_count(3)
        assert visitor.errors == []
        await page.context.close()


async def test_confirm_sends_one_frame_and_the_card_is_updated_in_place_fake_desk(browser):
    async with fake_desk() as desk:
        visitor = await chatting(browser, desk, DESKTOP)
        page = visitor.page
        await desk.send(cancel_order(31, "confirm_required"))
        await desk.answer(21, ["Shall I cancel order A1002?"])
        card = page.locator(".ac")
        await expect(card.locator("> div").first).to_have_text("Cancel order A1002?")
        confirm = card.get_by_role("button", name="Confirm")
        cancel = card.get_by_role("button", name="Cancel")
        await expect(confirm).to_be_enabled()
        await expect(cancel).to_be_enabled()

        # By keyboard: Tab reaches the buttons, Enter presses Confirm.
        await cancel.focus()
        await page.keyboard.press("Shift+Tab")
        assert await confirm.evaluate("b => b.getRootNode().activeElement === b")
        await page.keyboard.press("Enter")
        await desk.wait_for("action.confirm")
        await expect(confirm).to_be_disabled()
        await expect(cancel).to_be_disabled()
        await expect(confirm).to_have_text("Confirming…")
        # Pressing again does nothing: the buttons are disabled.
        await confirm.evaluate("b => b.click()")
        await cancel.evaluate("b => b.click()")
        await page.keyboard.press("Enter")
        await asyncio.sleep(0.5)
        assert sent(desk, "action.confirm") == [{"type": "action.confirm", "call_id": 31}]
        assert sent(desk, "action.cancel") == []
        # The keyboard's place stays in the card, not lost to the page.
        assert await card.evaluate("c => c.getRootNode().activeElement === c")

        await desk.send(cancel_order(31, "confirmed"))
        await expect(card).to_have_attribute("data-s", "confirmed")
        await expect(card.locator(".nt")).to_have_text("Confirming…")
        assert await card.locator("button").count() == 0

        await desk.send(
            cancel_order(
                31,
                "ok",
                text="Order A1002 is cancelled.",
                fields={"order_id": "A1002", "status": "cancelled"},
                latency_ms=40,
            )
        )
        await expect(card).to_have_attribute("data-s", "ok")
        await expect(page.locator(".ac")).to_have_count(1)  # the same card, not a second
        await expect(card.locator("> div")).to_have_text("Order A1002 is cancelled.")
        await expect(card.locator("dd")).to_have_text(["A1002", "cancelled"])
        await expect(card.locator(".nt")).to_have_count(0)
        assert await card.evaluate("c => c.getRootNode().activeElement === c")
        assert sent(desk, "action.confirm") == [{"type": "action.confirm", "call_id": 31}]
        assert visitor.errors == []
        await page.context.close()


async def test_cancel_sends_action_cancel_and_shows_it_was_cancelled_fake_desk(browser):
    async with fake_desk() as desk:
        visitor = await chatting(browser, desk, PHONE)
        page = visitor.page
        await desk.send(cancel_order(32, "confirm_required"))
        card = page.locator(".ac")
        await card.get_by_role("button", name="Cancel").click()
        assert (await desk.wait_for("action.cancel")) == {"type": "action.cancel", "call_id": 32}
        await expect(card.get_by_role("button", name="Confirm")).to_be_disabled()
        await expect(card.get_by_role("button", name="Confirm")).to_have_text("Confirm")
        await desk.send(cancel_order(32, "cancelled", text="Nothing was changed."))
        await expect(card).to_have_attribute("data-s", "cancelled")
        await expect(card.locator("> div")).to_have_text("Nothing was changed.")
        await expect(card.locator(".nt")).to_have_text("Cancelled")
        assert await card.locator("button").count() == 0
        assert await card.evaluate("c => c.textContent") == (
            "Cancel order" + "Nothing was changed." + "Cancelled"
        )
        assert sent(desk, "action.confirm") == []
        assert len(sent(desk, "action.cancel")) == 1
        assert visitor.errors == []
        await page.context.close()


async def test_hostile_texts_and_fields_are_shown_as_text_fake_desk(browser):
    async with fake_desk() as desk:
        visitor = await chatting(browser, desk)
        page = visitor.page
        await desk.send(
            action(
                40,
                "ok",
                label=HOSTILE,
                text=HOSTILE,
                fields={HOSTILE: HOSTILE, "__proto__": "x", "nested": {"a": HOSTILE}},
            )
        )
        await desk.send(
            cancel_order(41, "confirm_required", label=HOSTILE, confirm_text=HOSTILE + "?")
        )
        cards = page.locator(".ac")
        await expect(cards).to_have_count(2)
        await expect(cards.first.locator(".who")).to_have_text(HOSTILE)
        await expect(cards.first.locator("> div")).to_have_text(HOSTILE)
        # An object is not a value to show: only the plain ones are listed.
        await expect(cards.first.locator("dd")).to_have_text([HOSTILE, "x"])
        await expect(cards.last.locator("> div").first).to_have_text(HOSTILE + "?")
        assert await page.locator(".lg img").count() == 0
        assert await page.evaluate("typeof window.__xss") == "undefined"
        # A frame with no usable fields at all is still one card, not an error.
        await desk.send({"type": "action", "call_id": None, "status": 7, "fields": [1, 2]})
        await expect(cards).to_have_count(3)
        assert await cards.last.evaluate("c => c.textContent") == "Looked up"
        assert visitor.errors == []
        await page.context.close()


async def test_cards_speak_chinese_and_come_back_with_the_history_fake_desk(browser):
    """zh-CN words; the calls a resumed conversation's history carries are drawn before their
    answer, and a later frame for the same call updates that card."""
    async with fake_desk({**CONFIG, "language": "zh-CN"}) as desk:
        visitor = await chatting(browser, desk, PHONE)
        page = visitor.page
        pending = cancel_order(51, "confirm_required", label="")
        await desk.send(
            {
                "type": "history",
                "messages": [
                    {"id": 1, "role": "customer", "text": "取消订单 A1002", "client_id": "h1"},
                    {"id": 2, "role": "bot", "text": "要取消订单 A1002 吗？", "calls": [pending]},
                ],
            }
        )
        card = page.locator(".ac")
        await expect(card).to_have_count(1)
        await expect(card.locator(".who")).to_have_text("已查询")
        order = await page.locator(".lg > li").evaluate_all("lis => lis.map(li => li.className)")
        assert order[-2:] == ["ac", "m b"], order
        await expect(card.get_by_role("button", name="取消")).to_be_enabled()
        await card.get_by_role("button", name="确认").click()
        await expect(card.get_by_role("button", name="正在确认…")).to_be_disabled()
        assert (await desk.wait_for("action.confirm"))["call_id"] == 51
        await desk.send(cancel_order(51, "confirmed", label=""))
        await expect(card.locator(".nt")).to_have_text("正在确认…")
        await desk.send(cancel_order(51, "cancelled", label=""))
        await expect(card.locator(".nt")).to_have_text("已取消")
        await expect(page.locator(".ac")).to_have_count(1)
        assert visitor.errors == []
        await page.context.close()


# --- The console ------------------------------------------------------------------------------


def rendered_call(call) -> str:
    return Template("{% load action_calls %}{% action_call call %}").render(Context({"call": call}))


@pytest.mark.django_db(transaction=True)
async def test_console_shows_each_call_as_one_line_updated_in_place(synthetic_stack, browser):
    conversation, _ = await sync_to_async(chat_services.conversation_start)(language="en")
    page = await agent_page(browser, synthetic_stack.http)
    sockets = []

    def through(ws):  # the real console socket, with a way to add frames
        sockets.append(ws)
        ws.connect_to_server()

    await page.route_web_socket(re.compile(r"/ws/console/"), through)
    # The console fetches the transcript again just after its socket opens: lines drawn
    # before that would be replaced by the server's, so the frames come after it.
    await page.add_init_script(
        """document.addEventListener("htmx:afterSwap", (event) => {
            if (event.detail.target.id === "transcript") window.__transcriptSwaps = 1;
        });"""
    )
    await page.goto(f"{synthetic_stack.http}/console/c/{conversation.pk}/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    await page.wait_for_function("window.__transcriptSwaps === 1")

    def conv_bot(frame: dict) -> None:
        sockets[-1].send(
            json.dumps(
                {"type": "conv.bot", "conversation_id": str(conversation.pk), "frame": frame}
            )
        )

    conv_bot(cancel_order(61, "confirm_required"))
    line = page.locator('#transcript li[data-call-id="61"]')
    await expect(line.locator(".call__name")).to_have_text("cancel_order(order_id=A1002)")
    await expect(line.locator(".call__status")).to_have_text("waiting for the customer to confirm")
    await expect(line.locator(".call__confirm")).to_have_text(
        "Asked the customer: Cancel order A1002?"
    )
    assert await line.locator(".call__latency").count() == 0
    await expect(page.locator("#transcript .transcript__empty")).to_have_count(0)

    conv_bot(cancel_order(61, "confirmed"))
    await expect(line.locator(".call__status")).to_have_text("confirmed by the customer, calling")
    final = cancel_order(61, "ok", text="Order A1002 is cancelled.", latency_ms=84)
    conv_bot(final)
    await expect(line.locator(".call__status")).to_have_text("ok")
    await expect(line.locator(".call__latency")).to_have_text("84 ms")
    await expect(line.locator(".call__text")).to_have_text("Order A1002 is cancelled.")
    await expect(line).to_have_class(re.compile(r"\bcall--ok\b"))
    await expect(page.locator("#transcript li.call")).to_have_count(1)

    # The line the server renders for the stored call (templates/agents/_action_call.html)
    # is the one drawn live: same classes, data and words.
    html = await sync_to_async(rendered_call)(final)
    live, stored = await page.evaluate(
        """(html) => {
            const t = document.createElement("template");
            t.innerHTML = html.trim();
            const words = (e) => e.textContent.replace(/\\s+/g, " ").trim();
            const norm = (li) => [li.className, li.dataset.callId, li.dataset.status,
                                  ...[...li.children].map((c) => c.className + ": " + words(c))];
            return [norm(document.querySelector('#transcript li[data-call-id="61"]')),
                    norm(t.content.firstElementChild)];
        }""",
        html,
    )
    assert live == stored, (live, stored)

    # A failed call is marked; hostile texts stay text.
    conv_bot(
        action(
            62,
            "refused",
            name=HOSTILE,
            arguments={"order_id": HOSTILE},
            text=HOSTILE,
            reason="invalid_arguments",
            detail=HOSTILE,
            latency_ms=3,
        )
    )
    failed = page.locator('#transcript li[data-call-id="62"]')
    await expect(failed).to_have_class(re.compile(r"\bcall--failed\b"))
    await expect(failed.locator(".call__name")).to_have_text(f"{HOSTILE}(order_id={HOSTILE})")
    await expect(failed.locator(".call__text")).to_have_text(HOSTILE)
    await expect(failed.locator(".call__reason")).to_have_text("invalid_arguments")
    assert await failed.locator(".call__latency").count() == 0  # refused: nothing was sent
    assert await page.locator("#transcript img").count() == 0
    assert await page.evaluate("typeof window.__xss") == "undefined"
    await page.context.close()


def test_the_transcript_draws_stored_calls_before_their_answer():
    """The hook for a reopened conversation: `calls` on a message (dicts or ActionCall rows)
    come before it, `calls` in the context after everything."""
    when = "2026-11-24T01:20:00+00:00"
    row = SimpleNamespace(
        pk=7,
        action_name="order_status",
        arguments={"items": 2, "order_id": HOSTILE},
        status="error",
        reason="http_404",
        detail="",
        latency_ms=51,
        text="Nothing matches those details.",
    )
    answer = SimpleNamespace(
        pk=2, role="bot", text="Sorry.", created_at=when, calls=[row], streaming=False
    )
    waiting = cancel_order(8, "confirm_required", text=HOSTILE)
    html = render_to_string("agents/_transcript.html", {"messages": [answer], "calls": [waiting]})
    stored = html.index('data-call-id="7"')
    assert stored < html.index('data-id="2"') < html.index('data-call-id="8"')
    assert 'class="call call--failed"' in html and 'data-status="error"' in html
    assert '<span class="call__name mono">order_status(items=2, order_id=&lt;img' in html
    assert '<span class="call__latency">51 ms</span>' in html
    assert '<span class="tag call__reason">http_404</span>' in html
    assert "Asked the customer: Cancel order A1002?" in html
    assert "<img" not in html and "&lt;img src=x onerror=window.__xss=1&gt;" in html
    assert "No messages yet." not in html

    assert "No messages yet." in render_to_string("agents/_transcript.html", {"messages": []})
    only_calls = render_to_string("agents/_transcript.html", {"messages": [], "calls": [waiting]})
    assert "No messages yet." not in only_calls and 'data-call-id="8"' in only_calls
