"""The demo chat page at / in a real Chromium (Debian's, driven by Playwright) against the real
stack: what a visitor sees while the real model streams, what survives a reload, and that
customer text is shown as text. Assertions read the page's DOM and the database Daphne wrote."""

import asyncio
import json
import re

import pytest
from playwright.async_api import Browser, Page, expect

from chat.models import Conversation, Message
from tests.e2e.conftest import MAX_TOKENS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STORE = "cs-demo-conversation"  # demo.js's localStorage key
ANSWER_TIMEOUT = 90  # seconds

# Runs in the page before demo.js: every DOM change records each bot bubble's text length and
# whether it is still streaming, so growth between deltas is seen as the browser rendered it.
RECORD_BOT_BUBBLES = """
window.__botSamples = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll("#log .msg--bot")) {
    window.__botSamples.push({id: el.dataset.id, len: el.textContent.length,
                              streaming: el.classList.contains("msg--streaming")});
  }
}).observe(document, {subtree: true, childList: true, characterData: true,
                      attributes: true, attributeFilter: ["class"]});
"""

# The bubbles of the log as (role, text without the meta line, message id), in order.
LOG_BUBBLES = """() => [...document.querySelectorAll("#log > li")].map((li) => {
  const copy = li.cloneNode(true);
  copy.querySelectorAll(".msg__meta").forEach((meta) => meta.remove());
  const role = [...li.classList].find((c) => c.startsWith("msg--") && c !== "msg--pending"
                                               && c !== "msg--streaming");
  return [role, copy.textContent, li.dataset.id === undefined ? null : Number(li.dataset.id)];
})"""


class ChatPage:
    """One visitor's tab on the demo page, with the frames its WebSocket received."""

    def __init__(self, page: Page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.frames: list[dict] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "websocket",
            lambda ws: ws.on(
                "framereceived", lambda payload: self.frames.append(json.loads(payload))
            ),
        )

    @classmethod
    async def open(cls, browser: Browser, base_url: str) -> "ChatPage":
        context = await browser.new_context()  # its own, empty localStorage
        await context.add_init_script(RECORD_BOT_BUBBLES)
        chat = cls(await context.new_page(), base_url)
        await chat.page.goto(base_url + "/")
        await chat.wait_online()
        return chat

    async def wait_online(self) -> None:
        status = self.page.locator("#status")
        await expect(status).to_have_text("Online", timeout=15_000)
        await expect(status).to_have_attribute("data-state", "open")

    async def frame(self, kind: str, after: int, timeout: float = ANSWER_TIMEOUT) -> dict:
        """The first frame of this type received after the first `after` frames."""
        async with asyncio.timeout(timeout):
            while True:
                found = next((f for f in self.frames[after:] if f["type"] == kind), None)
                if found is not None:
                    return found
                await asyncio.sleep(0.02)

    async def ask(self, text: str, *, typing: bool = False) -> tuple[dict, dict]:
        """Type a message, press Enter, wait for the answer: (message.ack, bot.done)."""
        start = len(self.frames)
        box = self.page.locator("#text")
        if typing:
            await box.press_sequentially(text)
        else:
            await box.fill(text)
        await box.press("Enter")
        ack = await self.frame("message.ack", start)
        done = await self.frame("bot.done", start)
        # demo.js appends the meta line when it handles bot.done.
        await expect(
            self.page.locator(f'#log .msg--bot[data-id="{done["message_id"]}"] .msg__meta')
        ).to_be_attached()
        return ack, done

    async def bubbles(self) -> list[list]:
        return await self.page.evaluate(LOG_BUBBLES)


async def stored_bubbles(conversation_id: str) -> list[list]:
    return [
        [f"msg--{m.role}", m.text, m.id]
        async for m in Message.objects.filter(conversation_id=conversation_id).order_by("id")
    ]


async def test_visitor_sees_the_answer_stream_and_finds_it_again_after_reload(
    real_stack, browser, short_answers
):
    chat = await ChatPage.open(browser, real_stack.http)
    page = chat.page
    question = "Hello! How do I reset the password of my account?"

    ack, done = await chat.ask(question, typing=True)

    # The customer bubble shows the question, acked with the stored message's id.
    customer = page.locator("#log .msg--customer")
    await expect(customer).to_have_count(1)
    await expect(customer).to_have_text(question)
    await expect(customer).to_have_attribute("data-id", str(ack["id"]))
    await expect(customer).not_to_have_class(re.compile(r"msg--pending"))
    assert await page.locator("#text").input_value() == ""

    # The bot bubble grew while streaming (as rendered in the page), then ended.
    bot = page.locator("#log .msg--bot")
    await expect(bot).to_have_count(1)
    await expect(bot).to_have_attribute("data-id", str(done["message_id"]))
    await expect(bot).not_to_have_class(re.compile(r"msg--streaming"))
    samples = await page.evaluate("window.__botSamples")
    streamed = [
        s["len"]
        for s in samples
        if s["id"] == str(done["message_id"]) and s["streaming"] and s["len"] > 0
    ]
    assert len(set(streamed)) >= 2, f"bot bubble did not grow while streaming: {streamed}"
    assert streamed == sorted(streamed), f"bot bubble shrank while streaming: {streamed}"
    deltas = [f for f in chat.frames if f["type"] == "bot.delta"]
    assert len(deltas) >= 2 and all(f["message_id"] == done["message_id"] for f in deltas)

    # The final text (without the meta line) is the bot message the database holds.
    assert not done["fallback"]
    stored = await Message.objects.aget(pk=done["message_id"])
    meta = page.locator("#log .msg--bot .msg__meta")
    await expect(meta).to_have_text(re.compile(rf"^{stored.completion_tokens} tokens · \d+\.\d s$"))
    bubbles = await chat.bubbles()
    assert bubbles == [["msg--customer", question, ack["id"]], ["msg--bot", stored.text, stored.id]]
    assert stored.role == "bot" and stored.text.strip()
    assert 2 <= stored.completion_tokens <= MAX_TOKENS
    conversation_id = stored.conversation_id
    assert await stored_bubbles(conversation_id) == bubbles

    # localStorage holds the conversation's id and token; a reload resumes it with its history.
    saved = json.loads(await page.evaluate(f"localStorage.getItem({STORE!r})"))
    assert saved["id"] == str(conversation_id) and saved["token"]
    conversations = await Conversation.objects.acount()
    before = len(chat.frames)
    await page.reload()
    await chat.wait_online()
    resumed = await chat.frame("conversation", before, timeout=15)
    assert resumed["resumed"] is True and resumed["id"] == str(conversation_id)
    await chat.frame("history", before, timeout=15)
    await expect(page.locator("#log > li")).to_have_count(2)
    assert await chat.bubbles() == bubbles
    assert await Conversation.objects.acount() == conversations  # resumed, none started
    assert chat.errors == []


XSS_PAYLOADS = ['<img src=x onerror="window.__xss=1">', "<script>window.__xss=2</script>"]


async def test_customer_html_is_shown_as_text_and_never_runs(real_stack, browser, short_answers):
    chat = await ChatPage.open(browser, real_stack.http)
    page = chat.page
    log = page.locator("#log")

    async def assert_inert() -> None:
        assert await page.evaluate("typeof window.__xss") == "undefined"
        await expect(log.locator("img, script")).to_have_count(0)
        customers = page.locator("#log .msg--customer")
        await expect(customers).to_have_count(len(XSS_PAYLOADS))
        for index, payload in enumerate(XSS_PAYLOADS):
            # Exactly the typed text, as the bubble's only content (no child elements).
            assert await customers.nth(index).evaluate("el => el.textContent") == payload
            assert await customers.nth(index).evaluate("el => el.children.length") == 0

    for payload in XSS_PAYLOADS:
        ack, _ = await chat.ask(payload)
        assert (await Message.objects.aget(pk=ack["id"])).text == payload
    # The answers took long enough for an injected <img> to have failed to load and fired.
    await assert_inert()

    # Rendered again from the stored history after a reload: still text.
    before = len(chat.frames)
    await page.reload()
    await chat.wait_online()
    await chat.frame("history", before, timeout=15)
    conversation_id = (await Message.objects.aget(pk=ack["id"])).conversation_id
    history = [b for b in await stored_bubbles(conversation_id) if b[1]]
    await expect(log.locator("> li")).to_have_count(len(history))
    assert await chat.bubbles() == history
    await assert_inert()
    assert chat.errors == []


async def test_the_sample_customer_looks_up_an_order_and_cancels_another(
    real_stack, browser, short_answers, settings
):
    """`make run`'s sample: the demo page's visitor is the sample shop's customer; the sample
    actions call the sample shop this desk serves. A look-up shows its card before the
    answer; a cancellation waits for Confirm, then the card shows the back end's result."""
    import io

    from asgiref.sync import sync_to_async
    from django.core.management import call_command

    from chat.actions.models import ActionCall

    settings.ACTIONS = {**settings.ACTIONS, "SAMPLE_BASE_URL": real_stack.http}
    await sync_to_async(call_command)("import_actions", "--sample", stdout=io.StringIO())
    chat = await ChatPage.open(browser, real_stack.http)
    page = chat.page
    await expect(page.locator(".chat__who")).to_contain_text("A1001")

    start = len(chat.frames)
    await chat.ask("Where is my order A1001?")
    looked_up = await chat.frame("action", start, timeout=5)
    assert looked_up["status"] == "ok" and looked_up["name"] == "order_status"
    card = page.locator(".msg--action >> nth=0")
    await expect(card).to_have_attribute("data-status", "ok")
    await expect(card).to_contain_text("Order A1001")

    start = len(chat.frames)
    await chat.ask("Please cancel order A1002")
    waiting = await chat.frame("action", start, timeout=5)
    assert waiting["status"] == "confirm_required" and waiting["name"] == "cancel_order"
    card = page.locator(".msg--action >> nth=1")
    await expect(card).to_contain_text("Cancel order A1002")
    await card.get_by_role("button", name="Confirm").click()
    await expect(card).to_have_attribute("data-status", "ok", timeout=15_000)
    await expect(card).to_contain_text("A1002")
    call = await ActionCall.objects.aget(pk=waiting["call_id"])
    assert call.status == "ok" and call.fields["status_text"].startswith("cancelled")


async def test_a_message_typed_before_the_server_names_the_conversation_waits_and_stays(
    synthetic_stack, browser
):
    """The socket opens before the server's first frame says which conversation it is, and a
    new conversation's frame redraws the log. A message typed in between shows at once, waits
    for that frame, stays in the log through the redraw, and reaches the server once."""
    context = await browser.new_context()
    held: list[str] = []  # server → page frames not passed on yet
    to_page: list[dict] = []
    to_server: list[dict] = []
    routes = []
    first_frame = asyncio.Event()

    def route(ws) -> None:
        server = ws.connect_to_server()
        routes.append(ws)

        def from_server(message: str) -> None:
            to_page.append(json.loads(message))
            first_frame.set()
            held.append(message)
            if not held_back:
                release()

        def from_page(message: str) -> None:
            to_server.append(json.loads(message))
            server.send(message)

        server.on_message(from_server)
        ws.on_message(from_page)

    def release() -> None:
        while held:
            routes[0].send(held.pop(0))

    held_back = True
    await context.route_web_socket(re.compile(r"/ws/chat/"), route)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(synthetic_stack.http + "/")
    async with asyncio.timeout(15):
        await first_frame.wait()
    assert to_page[0]["type"] == "conversation"
    status = page.locator("#status")
    await expect(status).not_to_have_attribute("data-state", "open")  # not told yet

    question = "Where is my parcel?"
    await page.locator("#text").fill(question)
    await page.locator("#text").press("Enter")
    customer = page.locator("#log .msg--customer")
    await expect(customer).to_have_text(question)
    await expect(customer).to_have_class(re.compile(r"msg--pending"))
    await page.wait_for_timeout(300)
    assert [f for f in to_server if f["type"] == "message"] == []  # held until the frame

    held_back = False  # the conversation frame goes now; what follows, as it comes
    release()
    await expect(status).to_have_attribute("data-state", "open")
    await expect(page.locator("#log .msg--bot .msg__meta")).to_be_attached(timeout=30_000)
    await expect(customer).to_have_count(1)
    await expect(customer).to_have_text(question)
    await expect(customer).not_to_have_class(re.compile(r"msg--pending"))
    sent = [f for f in to_server if f["type"] == "message"]
    assert [f["text"] for f in sent] == [question]
    ack = next(f for f in to_page if f["type"] == "message.ack")
    await expect(customer).to_have_attribute("data-id", str(ack["id"]))
    stored = await Message.objects.aget(pk=ack["id"])
    assert stored.text == question
    assert (
        await Message.objects.filter(
            conversation_id=stored.conversation_id, role="customer"
        ).acount()
        == 1
    )
    assert errors == []
    await context.close()
