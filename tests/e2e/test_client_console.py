"""The built console (static/agents/console.js, from static/agents/src/) in a real Chromium on
the real console page (synthetic stack, a staff login): a streamed bot answer whose bot.done
carries sources shows them as links under the answer.

Sources are not produced end to end yet, so the conv.bot frames of that answer are INJECTED
into the console's real WebSocket (Playwright's route_web_socket forwards the server's frames
and adds the test's); everything else is the real page and socket."""

import json
import re

import pytest
from asgiref.sync import sync_to_async
from playwright.async_api import expect

from chat import services as chat_services
from tests.e2e.test_console_handoff import agent_page

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
        sockets[-1].send(json.dumps({"type": "conv.bot", "conversation_id": str(conversation.pk),
                                     "frame": frame}))

    conv_bot({"type": "bot.start", "message_id": 90001, "reply_to": 1})
    for piece in ["Returns are free ", "within 30 days."]:
        conv_bot({"type": "bot.delta", "message_id": 90001, "text": piece})
    answer = page.locator('#transcript li[data-id="90001"]')
    await expect(answer.locator(".msg__text")).to_have_text("Returns are free within 30 days.")
    await expect(answer).to_have_class(re.compile("msg--streaming"))
    conv_bot({"type": "bot.done", "message_id": 90001, "finish_reason": "stop", "fallback": False,
              "partial": False, "sources": [
                  {"article_id": 3, "title": "Returns", "url": "https://shop.example/help/returns"},
                  {"article_id": 4, "title": "<b>Fees</b>", "url": "javascript:alert(1)"}]})
    await expect(answer).not_to_have_class(re.compile("msg--streaming"))
    sources = answer.locator(".msg__sources")
    await expect(sources).to_have_text("Sources: Returns <b>Fees</b>")
    links = await sources.locator("a").evaluate_all(
        "links => links.map(a => [a.textContent, a.getAttribute('href'), a.target, a.rel])")
    assert links == [["Returns", "https://shop.example/help/returns", "_blank",
                      "noopener noreferrer"]]
    assert await answer.locator("b").count() == 0

    # An answer without sources gets no line.
    conv_bot({"type": "bot.start", "message_id": 90002, "reply_to": 1})
    conv_bot({"type": "bot.delta", "message_id": 90002, "text": "Anything else?"})
    conv_bot({"type": "bot.done", "message_id": 90002, "finish_reason": "stop", "fallback": False,
              "partial": False, "sources": []})
    second = page.locator('#transcript li[data-id="90002"]')
    await expect(second).not_to_have_class(re.compile("msg--streaming"))
    assert await second.locator(".msg__sources").count() == 0
    await page.context.close()
