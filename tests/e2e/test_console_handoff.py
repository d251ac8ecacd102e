"""A customer (the widget on a company page) and an agent (the console) in two browser
contexts against the real stack: the agent watches the bot's answer stream, takes over
mid-answer, both exchange messages, the agent hands back and the bot answers again."""

import asyncio
import re

import pytest
from django.contrib.auth import get_user_model
from playwright.async_api import expect

from chat.models import BotProfile, Conversation, Message
from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT
from tests.e2e.test_widget import FINISHED_ANSWER, Visitor, company_page

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STORY = "Write a very long story about a lighthouse keeper, with many chapters."


@pytest.fixture
async def long_answers(transactional_db):
    """Answers long enough to be taken over while they stream."""
    if not await BotProfile.objects.filter(is_default=True).aupdate(max_tokens=600):
        await BotProfile.objects.acreate(
            name=DEFAULT_PROFILE_NAME,
            is_default=True,
            system_prompt=DEFAULT_SYSTEM_PROMPT,
            max_tokens=600,
        )


async def agent_page(browser, desk: str):
    user = get_user_model()(username="ada", first_name="Ada", is_staff=True)
    user.set_password("a-long-test-password")
    await user.asave()
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(f"{desk}/admin/login/?next=/console/")
    await page.fill("#id_username", "ada")
    await page.fill("#id_password", "a-long-test-password")
    await page.click("[type=submit]")
    await page.wait_for_url(f"{desk}/console/")
    return page


async def test_agent_watches_takes_over_mid_answer_talks_and_hands_back(
    real_stack, host_pages, browser, long_answers
):
    site, url = await company_page(host_pages, real_stack.http)
    customer_context = await browser.new_context(viewport={"width": 420, "height": 760})
    customer = Visitor(await customer_context.new_page())
    await customer.page.goto(url)
    await customer.open_widget()
    # A conversation reaches the console with its first message.
    await customer.ask("Hello!")
    conversation = await Conversation.objects.aget(site=site)

    agent = await agent_page(browser, real_stack.http)
    await agent.goto(f"{real_stack.http}/console/c/{conversation.pk}/")
    transcript = agent.locator("#transcript")
    await expect(agent.locator("#controls")).to_contain_text("Take over")

    # The agent sees the bot's answer stream, as the customer sees it, then takes over.
    streaming = transcript.locator(".msg--bot.msg--streaming .msg__text")
    for _attempt in range(4):  # a tiny model can end an answer early: then ask again
        await customer.page.locator("textarea").first.fill(STORY)
        await customer.page.keyboard.press("Enter")
        try:
            # At least 30 characters of the answer have reached the agent's screen.
            await expect(streaming).to_have_text(re.compile(r".{30}", re.S), timeout=60_000)
        except AssertionError:
            continue
        await agent.get_by_role("button", name="Take over").click()
        await expect(agent.locator("#controls")).to_contain_text("You hold this conversation")
        await expect(customer.page.locator(".sy").last).to_contain_text("Ada joined")
        # The answer ends on both screens (its bot.done follows the stored message).
        await expect(transcript.locator(".msg--streaming")).to_have_count(0)
        taken = await Message.objects.filter(conversation=conversation, role="bot").alast()
        if taken.finish_reason == "takeover":
            break
        # It had ended on its own just before the click: hand back and ask again.
        await agent.get_by_role("button", name="Hand back to bot").click()
        await expect(customer.page.locator(".sy").last).to_contain_text("assistant again")
    else:
        pytest.fail("no answer was still streaming when the agent took over")
    assert taken.is_partial and taken.text

    # Both sides talk; the bot stays silent meanwhile.
    bots_before = await Message.objects.filter(conversation=conversation, role="bot").acount()
    await agent.fill("#reply-text", "Hi, I'm Ada from Acme. How can I help?")
    await agent.keyboard.press("Enter")
    await expect(customer.page.locator(".m.b").last).to_contain_text("I'm Ada from Acme")
    await customer.page.locator("textarea").first.fill("My parcel is late.")
    await customer.page.keyboard.press("Enter")
    await expect(transcript.locator(".msg--customer").last).to_contain_text("My parcel is late.")
    await asyncio.sleep(1)  # a second in which the bot must not answer (the test)
    assert (
        await Message.objects.filter(conversation=conversation, role="bot").acount() == bots_before
    )

    # Hand back: the bot answers the next question.
    await agent.get_by_role("button", name="Hand back to bot").click()
    await expect(customer.page.locator(".sy").last).to_contain_text("assistant again")
    answers = await customer.page.locator(FINISHED_ANSWER).count()
    await customer.page.locator("textarea").first.fill("Thanks. Can you tell me the delivery time?")
    await customer.page.keyboard.press("Enter")
    await expect(customer.page.locator(FINISHED_ANSWER)).to_have_count(answers + 2, timeout=120_000)
    last = await Message.objects.filter(conversation=conversation).exclude(role="system").alast()
    assert last.role == "bot" and not last.is_partial and last.text
    await expect(transcript.locator(f'[data-id="{last.pk}"]')).to_have_count(1)
    await customer_context.close()
    await agent.context.close()
