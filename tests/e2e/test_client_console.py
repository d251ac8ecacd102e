"""The built console (static/agents/console.js, from static/agents/src/) in a real Chromium on
the real console page (synthetic stack, a staff login): a streamed bot answer whose bot.done
carries sources shows them as links under the answer; a reply sent as a live refresh redraws
the reply box is posted.

Sources are not produced end to end yet, so the conv.bot frames of that answer are INJECTED
into the console's real WebSocket (Playwright's route_web_socket forwards the server's frames
and adds the test's); everything else is the real page and socket."""

import json
import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from playwright.async_api import expect

from agents import services as agents_services
from chat import services as chat_services
from chat.models import Message
from tests.e2e.test_console_handoff import agent_page
from tests.waiting import poll

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


async def test_console_lists_an_answers_sources_under_it(synthetic_stack, browser):
    conversation, _ = await sync_to_async(chat_services.conversation_start)(language="en")
    page = await agent_page(browser, synthetic_stack.http)
    sockets = []

    def through(ws):  # the real console socket, with a way to add frames
        sockets.append(ws)
        ws.connect_to_server()

    await page.route_web_socket(re.compile(r"/ws/console/"), through)
    await page.goto(f"{synthetic_stack.http}/console/c/{conversation.pk}/")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "open")

    def conv_bot(frame: dict) -> None:
        sockets[-1].send(
            json.dumps(
                {"type": "conv.bot", "conversation_id": str(conversation.pk), "frame": frame}
            )
        )

    conv_bot({"type": "bot.start", "message_id": 90001, "reply_to": 1})
    for piece in ["Returns are free ", "within 30 days."]:
        conv_bot({"type": "bot.delta", "message_id": 90001, "text": piece})
    answer = page.locator('#transcript li[data-id="90001"]')
    await expect(answer.locator(".msg__text")).to_have_text("Returns are free within 30 days.")
    await expect(answer).to_have_class(re.compile("msg--streaming"))
    conv_bot(
        {
            "type": "bot.done",
            "message_id": 90001,
            "finish_reason": "stop",
            "fallback": False,
            "partial": False,
            "sources": [
                {"article_id": 3, "title": "Returns", "url": "https://shop.example/help/returns"},
                {"article_id": 4, "title": "<b>Fees</b>", "url": "javascript:alert(1)"},
            ],
        }
    )
    await expect(answer).not_to_have_class(re.compile("msg--streaming"))
    sources = answer.locator(".msg__sources")
    await expect(sources).to_have_text("Sources: Returns <b>Fees</b>")
    links = await sources.locator("a").evaluate_all(
        "links => links.map(a => [a.textContent, a.getAttribute('href'), a.target, a.rel])"
    )
    assert links == [
        ["Returns", "https://shop.example/help/returns", "_blank", "noopener noreferrer"]
    ]
    assert await answer.locator("b").count() == 0

    # An answer without sources gets no line.
    conv_bot({"type": "bot.start", "message_id": 90002, "reply_to": 1})
    conv_bot({"type": "bot.delta", "message_id": 90002, "text": "Anything else?"})
    conv_bot(
        {
            "type": "bot.done",
            "message_id": 90002,
            "finish_reason": "stop",
            "fallback": False,
            "partial": False,
            "sources": [],
        }
    )
    second = page.locator('#transcript li[data-id="90002"]')
    await expect(second).not_to_have_class(re.compile("msg--streaming"))
    assert await second.locator(".msg__sources").count() == 0
    await page.context.close()


async def test_a_reply_sent_as_a_live_refresh_redraws_the_box_is_posted(synthetic_stack, browser):
    """htmx wires a swapped-in form only when the swap settles, 20 ms later; a reply sent in
    between (Enter as a status change re-renders the reply box) was the browser's own submit:
    a GET of the page with the text in its address, and the reply lost."""
    conversation, _ = await sync_to_async(chat_services.conversation_start)(language="en")
    page = await agent_page(browser, synthetic_stack.http)
    agent = await get_user_model().objects.aget(username="ada")
    await sync_to_async(agents_services.takeover)(conversation_id=conversation.pk, agent=agent)
    address = f"{synthetic_stack.http}/console/c/{conversation.pk}/"
    await page.goto(address)
    await expect(page.locator("#reply-text")).to_be_enabled()

    # A refresh of the controls re-renders the reply box (out of band); the reply is sent the
    # moment the new box is in the page, before htmx has settled it.
    sent_into_a_new_box = await page.evaluate(
        """(text) => new Promise((resolve) => {
        const before = document.querySelector("#composer form");
        document.addEventListener("htmx:oobAfterSwap", function once() {
            const form = document.querySelector("#composer form");
            if (!form || form === before) return;
            document.removeEventListener("htmx:oobAfterSwap", once);
            form.querySelector("textarea").value = text;
            form.requestSubmit();
            resolve(true);
        });
        htmx.trigger("#controls", "refresh");
    })""",
        "Sent as the box was redrawn",
    )
    assert sent_into_a_new_box

    await poll(
        lambda: Message.objects.filter(
            conversation=conversation, role="agent", text="Sent as the box was redrawn"
        ).aexists()
    )
    await expect(page.locator("#transcript")).to_contain_text("Sent as the box was redrawn")
    assert page.url == address  # still the console, not a GET of it with the text
    await page.context.close()
