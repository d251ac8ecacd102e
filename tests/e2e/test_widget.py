"""The embeddable widget in a real Chromium, on a company page served from another origin than
the desk, against the real stack (Redis, the vLLM worker with the real model, Daphne); model
text that must be escaped comes from the synthetic token source behind a second Daphne.
Assertions read the widget's shadow DOM (Playwright's CSS locators pierce it) and the
database Daphne wrote."""

import asyncio
import json
import os
import re
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from chat.models import Conversation, Feedback, Message, Site
from tests.actions.helpers import answer_text
from tests.waiting import poll

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ANSWER_TIMEOUT = 90_000  # ms; the real model on a CPU
FINISHED_ANSWER = ".m.b[aria-busy=false] .th"  # a bot answer with its thumbs: streaming ended
COMPANY_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Acme Shop</title>
<style>/* hostile host styles the widget must survive */
* {{ font-size: 40px !important; color: red !important; }} button {{ display: none !important; }}
</style></head>
<body><h1>Acme Shop</h1><p>Our products.</p>
<script src="{desk}/static/widget/embed.js" data-site-key="{key}" data-lang="{lang}" {extra}
        async></script>
</body></html>
"""


async def company_page(
    host_pages, desk: str, *, lang: str = "en", origin: str | None = None, extra: str = ""
):
    """A company page embedding the widget; a site allows the page's origin (host_pages.url)."""
    site = await Site.objects.acreate(
        name="Acme Shop", allowed_origins=host_pages.url, greeting="Hello from Acme!"
    )
    name = f"shop-{site.pk}.html"
    (Path(host_pages.root) / name).write_text(
        COMPANY_PAGE.format(desk=desk, key=site.key, lang=lang, extra=extra)
    )
    return site, f"{origin or host_pages.url}/{name}"


class Visitor:
    def __init__(self, page: Page):
        self.page = page
        self.frames: list[dict] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on(
            "websocket",
            lambda ws: ws.on(
                "framereceived", lambda payload: self.frames.append(json.loads(payload))
            ),
        )

    async def open_widget(self) -> None:
        await self.page.locator(".l").click()
        await expect(self.page.locator("[role=dialog]")).to_be_visible()
        await self.wait_state("online")

    async def wait_state(self, state: str) -> None:
        await expect(self.page.locator(".st")).to_have_attribute("data-s", state, timeout=20_000)

    async def ask(self, text: str) -> dict:
        """Type, press Enter, wait for the finished answer; its bot.done frame."""
        answers_before = await self.page.locator(FINISHED_ANSWER).count()
        await self.page.locator("textarea").first.fill(text)
        await self.page.keyboard.press("Enter")
        try:
            await expect(self.page.locator(FINISHED_ANSWER)).to_have_count(
                2 * (answers_before // 2 + 1), timeout=ANSWER_TIMEOUT
            )  # two thumbs per answer
        except AssertionError as exc:  # say which answers ended, and how
            ended = [
                {key: f.get(key) for key in ("message_id", "finish_reason", "fallback", "guards")}
                for f in self.frames
                if f["type"] == "bot.done"
            ]
            raise AssertionError(f"{exc}\nbot.done frames so far: {ended}") from None
        return [f for f in self.frames if f["type"] == "bot.done"][-1]


@pytest.fixture
async def visitor(browser):
    context = await browser.new_context(viewport={"width": 420, "height": 760})
    yield Visitor(await context.new_page())
    await context.close()


async def test_widget_on_a_company_page_streams_an_answer_that_is_stored(
    real_stack, host_pages, visitor, short_answers
):
    site, url = await company_page(host_pages, real_stack.http)
    await visitor.page.goto(url)
    await visitor.open_widget()
    assert await visitor.page.locator(".lg li").first.inner_text() == "Hello from Acme!"
    done = await visitor.ask("Hello, where is my parcel?")

    conversation = await Conversation.objects.aget(site=site)
    assert conversation.page_url == url and conversation.language == "en"
    answer = await Message.objects.aget(pk=done["message_id"])
    # A guard may replace what streamed (`bot.start` with `replace`): the widget then shows the
    # replacement's deltas only, and those are what was stored.
    frames = [f for f in visitor.frames if f.get("message_id") == answer.id]
    deltas = [f for f in frames if f["type"] == "bot.delta"]
    assert len(deltas) >= 2 and answer_text(frames) == answer.text and answer.text.strip()
    # What the customer reads is the stored answer (markdown rendered: compare the words).
    shown = await visitor.page.locator(".m.b").nth(1).inner_text()
    for word in re.findall(r"\w+", answer.text):
        assert word in shown
    customer = await Message.objects.aget(conversation=conversation, role="customer")
    assert customer.text == "Hello, where is my parcel?"
    assert visitor.errors == []

    if os.environ.get("SCREENSHOT_DIR"):  # `make screenshots` refreshes the README's picture
        await visitor.page.locator("[role=dialog]").screenshot(
            path=str(Path(os.environ["SCREENSHOT_DIR"]) / "widget.png")
        )


async def test_reload_restores_history_and_an_offline_message_is_delivered_once(
    real_stack, host_pages, visitor, short_answers
):
    site, url = await company_page(host_pages, real_stack.http)
    page = visitor.page
    await page.goto(url)
    await visitor.open_widget()
    first = await visitor.ask("My order is 1234.")
    answer = await Message.objects.aget(pk=first["message_id"])

    await page.reload()
    await visitor.open_widget()
    await expect(page.locator(".m.c")).to_have_text(["My order is 1234."])
    await expect(page.locator(FINISHED_ANSWER)).to_have_count(2)  # the answer's two thumbs

    # The network drops while the customer types: the message waits, then goes once.
    await page.context.set_offline(True)
    await visitor.wait_state("offline")
    await page.locator("textarea").first.fill("Are you still there?")
    await page.keyboard.press("Enter")
    await expect(page.locator(".m.c.pd")).to_have_count(1)  # shown as pending
    await asyncio.sleep(1)  # a while offline, in which nothing may reach the desk (the test)
    assert not await Message.objects.filter(text="Are you still there?").aexists()
    await page.context.set_offline(False)
    await expect(page.locator(".m.c.pd")).to_have_count(0, timeout=30_000)
    await expect(page.locator(FINISHED_ANSWER)).to_have_count(4, timeout=ANSWER_TIMEOUT)
    await page.reload()  # and nothing is sent again from the stored queue
    await visitor.open_widget()
    await expect(page.locator(".m.c")).to_have_text(["My order is 1234.", "Are you still there?"])
    texts = [
        m.text
        async for m in Message.objects.filter(conversation__site=site, role="customer").order_by(
            "id"
        )
    ]
    assert texts == ["My order is 1234.", "Are you still there?"]
    assert await Conversation.objects.filter(site=site).acount() == 1
    assert answer.text


async def test_thumbs_and_csat_are_stored(real_stack, host_pages, visitor, short_answers):
    site, url = await company_page(host_pages, real_stack.http)
    page = visitor.page
    await page.goto(url)
    await visitor.open_widget()
    done = await visitor.ask("Thanks for the help!")
    thumbs = page.locator(".m.b").nth(1).locator(".th")
    await thumbs.nth(1).click()  # thumbs down
    await expect(thumbs.nth(1)).to_have_attribute("aria-pressed", "true")
    await page.locator(".cm textarea").fill("Too vague.")
    await page.locator(".cm button").click()

    async def commented():
        feedback = await Feedback.objects.filter(message_id=done["message_id"]).afirst()
        return feedback if feedback and feedback.comment else None

    feedback = await poll(commented)
    assert (feedback.rating, feedback.comment) == ("down", "Too vague.")

    await page.locator("[aria-haspopup=menu]").click()
    await page.locator("[role=menuitem]").nth(1).click()  # End chat
    await page.locator(".sr").nth(3).click()  # 4 stars
    await page.locator(".cs textarea").fill("Quick answers.")
    await page.locator(".cs .sm").click()
    await expect(page.locator(".sy").last).to_contain_text("Thank you")
    conversation = await Conversation.objects.aget(site=site)
    assert (conversation.status, conversation.csat_score, conversation.csat_comment) == (
        "closed",
        4,
        "Quick answers.",
    )


async def test_a_page_on_an_origin_the_key_does_not_allow_gets_no_widget(
    real_stack, host_pages, visitor
):
    # The same page at http://localhost:PORT: another origin than the allowed 127.0.0.1:PORT.
    site, url = await company_page(host_pages, real_stack.http, origin=host_pages.other_url)
    warnings = []
    visitor.page.on("console", lambda message: warnings.append(message.text))
    await visitor.page.goto(url)
    # The loader gives up with a warning once the desk refused its config.
    await poll(lambda: any("CS Desk widget" in text for text in warnings), timeout=15)
    assert await visitor.page.locator(".l").count() == 0
    assert await Conversation.objects.acount() == 0


XSS_TEXT = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
XSS_MARKDOWN = (
    XSS_TEXT + " [click me](javascript:window.__xss=3) **bold** "
    '[docs](https://example.com/a?b="onmouseover=window.__xss=4)'
)


async def test_html_from_the_customer_and_from_the_model_is_shown_as_text(
    synthetic_stack, host_pages, visitor
):
    synthetic_stack.engine.reply = lambda prompt: XSS_MARKDOWN
    site, url = await company_page(host_pages, synthetic_stack.http)
    page = visitor.page
    await page.goto(url)
    await visitor.open_widget()
    await visitor.ask(XSS_TEXT)

    assert await page.evaluate("typeof window.__xss") == "undefined"
    assert await page.locator(".lg img, .lg script, .lg iframe").count() == 0
    assert await page.locator(".m.c").inner_text() == XSS_TEXT
    answer = page.locator(".m.b").nth(1)
    assert "<img src=x" in await answer.inner_text()
    assert await answer.locator("strong").inner_text() == "bold"  # markdown still works
    links = await answer.locator("a").evaluate_all(
        "links => links.map(a => [a.getAttribute('href'), a.target, a.rel])"
    )
    assert all(href.startswith("https://") for href, _, _ in links)
    assert all((target, rel) == ("_blank", "noopener noreferrer") for _, target, rel in links)
    await answer.locator("a").last.hover()
    assert await page.evaluate("typeof window.__xss") == "undefined"
    stored = await Message.objects.aget(conversation__site=site, role="bot")
    assert stored.text == XSS_MARKDOWN


async def test_what_a_guard_changed_is_what_the_customer_reads(
    synthetic_stack, host_pages, visitor
):
    """The model loops after a complaint: the widget ends up showing the answer the product
    kept (apology first, no loop, the offer of a human last), the same text as stored, and
    the button to ask for a human."""
    loop = "The Zephyr-8 has a 2-year warranty. The Zephyr-10 has a 3-year warranty. "
    synthetic_stack.engine.reply = lambda prompt: "We can repair it. " + loop * 6
    site, url = await company_page(host_pages, synthetic_stack.http)
    page = visitor.page
    await page.goto(url)
    await visitor.open_widget()
    done = await visitor.ask("This is unacceptable, the kettle broke after a week!")
    assert done["finish_reason"] == "repetition" and done["offer_human"] is True
    assert {"complaint", "repetition"} <= set(done["guards"])
    stored = await Message.objects.aget(pk=done["message_id"])
    assert stored.text.count("Zephyr") <= 1 and stored.text.endswith("human agent.")
    assert stored.text.startswith("I'm very sorry about this. We can repair it.")
    shown = await page.locator(".m.b").nth(1).inner_text()
    assert shown.split("\n")[0] == stored.text  # the streamed loop is gone from the screen
    await expect(page.locator(".hb")).to_be_visible()
    assert visitor.errors == []


async def test_keyboard_only_in_chinese_on_a_narrow_phone(synthetic_stack, host_pages, browser):
    """Open, type, send, rate, ask for a human and close with the keyboard alone, in the
    Chinese UI at 360 px; the bot's half-width punctuation arrives full-width."""
    synthetic_stack.engine.reply = lambda prompt: "您好,请提供订单号(例如A-1.5)谢谢!"
    site, url = await company_page(host_pages, synthetic_stack.http, lang="zh-CN")
    context = await browser.new_context(viewport={"width": 360, "height": 640}, locale="zh-CN")
    page = await context.new_page()
    await page.goto(url)
    launcher = page.locator(".l")
    await expect(launcher).to_have_attribute("aria-label", "打开聊天")
    await launcher.focus()
    await page.keyboard.press("Enter")
    dialog = page.locator("[role=dialog]")
    await expect(dialog).to_be_visible()
    box = await dialog.bounding_box()
    assert box["width"] <= 360 and box["x"] >= 0  # the panel fits the phone's width
    await expect(page.locator(".st")).to_have_attribute("data-s", "online", timeout=20_000)
    await page.keyboard.type("我的订单在哪里?")  # focus is in the message box already
    await page.keyboard.press("Enter")
    await expect(page.locator(FINISHED_ANSWER)).to_have_count(2, timeout=20_000)
    answer = page.locator(".m.b").nth(1)
    await expect(answer).to_contain_text("您好，请提供订单号（例如A-1.5）谢谢！")

    thumbs_up = answer.locator(".th").first
    await expect(thumbs_up).to_have_attribute("aria-label", "有帮助")
    await thumbs_up.focus()
    await page.keyboard.press("Enter")
    await expect(thumbs_up).to_have_attribute("aria-pressed", "true")
    human = page.locator(".hb")
    await human.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".sy").last).to_contain_text("客服")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()

    conversation = await Conversation.objects.aget(site=site)
    assert conversation.language == "zh-CN" and conversation.handoff_requested_at is not None
    stored = await Message.objects.aget(conversation=conversation, role="bot")
    assert stored.text == "您好，请提供订单号（例如A-1.5）谢谢！"
    assert (await Feedback.objects.aget(message=stored)).rating == "up"
    await context.close()


async def test_after_a_quiet_while_the_customer_is_asked_for_a_rating(
    synthetic_stack, host_pages, visitor
):
    site, url = await company_page(
        host_pages, synthetic_stack.http, extra='data-idle-minutes="0.05"'
    )  # 3 s of silence
    page = visitor.page
    await page.goto(url)
    await visitor.open_widget()
    await visitor.ask("Hi")
    stars = page.locator(".sr")
    await expect(stars).to_have_count(5, timeout=10_000)
    await stars.nth(4).click()
    await page.locator(".cs .sm").click()
    await expect(page.locator(".sy").last).to_contain_text("Thank you")
    conversation = await Conversation.objects.aget(site=site)
    assert (conversation.csat_score, conversation.status) == (5, "bot")  # still open


async def test_two_tabs_show_one_answer_streaming_in_both(synthetic_stack, host_pages, browser):
    """A second tab opened while the answer streams joins it mid-answer: it shows the text so
    far, then the rest; the model is asked once and one answer is stored."""
    engine = synthetic_stack.engine
    story = " ".join(f"Chapter{i}." for i in range(30))  # within the default max_tokens
    was = engine.reply, engine.tokens_per_second
    engine.reply, engine.tokens_per_second = (lambda prompt: story), 30  # ~10 s of streaming
    asked_before = len(engine.prompts)
    site, url = await company_page(host_pages, synthetic_stack.http)
    context = await browser.new_context(viewport={"width": 420, "height": 760})
    try:
        first = Visitor(await context.new_page())
        await first.page.goto(url)
        await first.open_widget()
        await first.page.locator("textarea").first.fill("Tell me the whole story.")
        await first.page.keyboard.press("Enter")
        streaming = first.page.locator(".m.b[aria-busy=true]")
        await expect(streaming).to_contain_text("Chapter3.", timeout=30_000)

        # The same page in a second tab of the same browser: the same conversation.
        second = Visitor(await context.new_page())
        await second.page.goto(url)
        await second.open_widget()
        for tab in (first, second):
            await expect(tab.page.locator(FINISHED_ANSWER)).to_have_count(2, timeout=60_000)
        assert await streaming.count() == 0
        shown = [await tab.page.locator(".m.b").last.inner_text() for tab in (first, second)]
        assert shown[0] == shown[1] and "Chapter29." in shown[0]
        # The second tab came in mid-answer: it never saw the answer's first words as deltas
        # of its own, yet shows them (the text so far arrived as one delta).
        assert any(
            f["type"] == "bot.delta" and "Chapter0." in f["text"] and "Chapter3." in f["text"]
            for f in second.frames
        )

        (answer,) = [m async for m in Message.objects.filter(conversation__site=site, role="bot")]
        assert answer.text == story and not answer.is_partial
        assert len(engine.prompts) == asked_before + 1
        assert await Conversation.objects.filter(site=site).acount() == 1
        assert first.errors == second.errors == []
    finally:
        engine.reply, engine.tokens_per_second = was
        await context.close()
