"""The staff playground in a real Chromium against Daphne, Redis and a worker streaming from
the synthetic token source (which records the sampling each request asked for): a support lead
moves the sliders, asks, sees the answer's figures, compares two settings side by side,
downloads the session as JSON and saves the settings as a bot profile."""

import asyncio
import json
import re
from pathlib import Path

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from playwright.async_api import expect

from chat.models import BotProfile, Conversation
from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT
from tests.e2e.test_console_handoff import agent_page

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# "Model output" that must stay text, and long enough to be cut by max_tokens.
REPLY = '<img src=x onerror="window.__xss=1"> Your parcel left our warehouse this morning.'
QUESTION = "When do parcels ship? (playground e2e)"


async def settled(form):
    """htmx binds a swapped-in form's controls when it settles, 20 ms after the swap (the
    htmx-added class goes then): a change made in between would send nothing."""
    await expect(form).not_to_have_class(re.compile(r"\bhtmx-added\b"))


@pytest.fixture
def engine(synthetic_stack):
    """The stack's synthetic source, answering REPLY for this test only (it is shared)."""
    engine = synthetic_stack.engine
    original, engine.reply = engine.reply, lambda prompt: REPLY
    yield engine
    engine.reply = original


async def test_a_lead_tunes_the_bot_compares_and_exports(synthetic_stack, engine, browser):
    await BotProfile.objects.all().adelete()
    await BotProfile.objects.acreate(
        name=DEFAULT_PROFILE_NAME,
        is_default=True,
        system_prompt=DEFAULT_SYSTEM_PROMPT,
        site_name="Acme",
    )
    page = await agent_page(browser, synthetic_stack.http)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.get_by_role("link", name="Playground").click()
    await expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    await expect(page.locator("#a-preview")).to_contain_text("Company: Acme.")

    # Sliders: dragged to a value, moved with the keyboard, and typed into the number box.
    await page.locator("#a-temperature").fill("1.3")
    await expect(page.locator("#a-temperature-num")).to_have_value("1.3")
    await page.locator("#a-top_p").focus()
    for _ in range(25):  # 0.8 → 0.55 in steps of 0.01
        await page.keyboard.press("ArrowLeft")
    await expect(page.locator("#a-top_p-num")).to_have_value("0.55")
    await page.locator("#a-max_tokens-num").fill("30")
    await page.locator("#a-max_tokens-num").press("Tab")
    await expect(page.locator("#a-max_tokens")).to_have_value("30")
    await page.locator("#a-frequency_penalty").fill("0.4")
    await page.locator("#a-region").fill("Bavaria")
    await expect(page.locator("#a-preview")).to_contain_text("Customer's region: Bavaria.")

    await page.locator("#pg-message").fill(QUESTION)
    await page.locator("#pg-message").press("Enter")
    answer = page.locator("#a-transcript .pg-msg--bot").last
    figure = lambda name: answer.locator(f"[data-figure={name}] dd")  # noqa: E731
    await expect(figure("finish_reason")).to_have_text("length", timeout=20_000)
    assert await answer.locator(".pg-msg__text").inner_text() == REPLY[:30]
    assert await page.locator("#a-transcript img").count() == 0
    assert await page.evaluate("typeof window.__xss") == "undefined"
    await expect(figure("completion_tokens")).to_have_attribute("data-value", "30")
    assert int(await figure("prompt_tokens").get_attribute("data-value")) > 0
    for name in ("ttft_ms", "tokens_per_second", "total_ms"):
        assert await figure(name).get_attribute("data-value") != "", name
    await expect(page.locator("#a-totals")).to_contain_text("1 answer · ")

    # At the worker: the request used the sliders' values.
    rid = next(r for r, prompt in engine.prompts.items() if QUESTION in prompt)
    assert engine.samplings[rid] == {
        "temperature": 1.3,
        "top_p": 0.55,
        "max_tokens": 30,
        "frequency_penalty": 0.4,
    }
    assert "Customer's region: Bavaria." in engine.prompts[rid]

    # Side by side: B starts from A's settings, one slider changed; one question, two answers.
    await page.get_by_label("Side by side").check()
    await page.get_by_role("button", name="Copy settings from A").click()
    await expect(page.locator("#b-max_tokens-num")).to_have_value("30")
    await page.locator("#b-temperature").fill("0.2")
    await page.locator("#pg-message").fill("And when will it arrive?")
    await page.get_by_role("button", name="Send").click()
    # Figures appear when an answer ends: A's second answer, B's first.
    for pane, answers in (("a", 2), ("b", 1)):
        finished = page.locator(f"#{pane}-transcript [data-figure=finish_reason] dd")
        await expect(finished).to_have_count(answers, timeout=20_000)
        await expect(finished.last).to_have_text("length")
    asked = {
        engine.samplings[r]["temperature"]
        for r, prompt in engine.prompts.items()
        if "And when will it arrive?" in prompt
    }
    assert asked == {1.3, 0.2}

    # Export: a download built from what the server stored.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Export JSON").click()
    download = await info.value
    assert download.suggested_filename.startswith("playground-")
    data = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
    a, b = data["panes"]
    assert [m["text"] for m in a["messages"]] == [
        QUESTION,
        REPLY[:30],
        "And when will it arrive?",
        REPLY[:30],
    ]
    first = a["messages"][1]
    assert (
        first["settings"]
        | {
            "temperature": 1.3,
            "top_p": 0.55,
            "max_tokens": 30,
            "frequency_penalty": 0.4,
            "region": "Bavaria",
        }
        == first["settings"]
    )
    assert first["figures"]["completion_tokens"] == 30
    assert first["figures"]["finish_reason"] == "length"
    assert b["messages"][1]["settings"]["temperature"] == 0.2 and a["totals"]["answers"] == 2
    conversations = Conversation.objects.filter(pk__in=[a["conversation_id"], b["conversation_id"]])
    assert {c.channel async for c in conversations} == {"playground"}

    # Save as bot profile: what changes is shown first; confirmed, it is written, logged in
    # admin history, and the pane shows the new profile. Choosing another profile resets it.
    lead = await get_user_model().objects.aget(username="ada")
    await lead.user_permissions.aadd(
        *[
            perm
            async for perm in Permission.objects.filter(
                codename__in=["add_botprofile", "change_botprofile"]
            )
        ]
    )
    settings_a = page.locator("#a-settings")
    await settings_a.get_by_role("button", name="Save as bot profile…").click()
    confirm = settings_a.locator(".pg-confirm")
    await expect(confirm.locator(".pg-diff")).to_contain_text("Temperature")
    await settled(settings_a.locator(".pg-save"))
    await confirm.get_by_label("As a new profile named").check()
    await confirm.get_by_label("Name of the new profile").fill("Warm & short")
    await confirm.get_by_role("button", name="Confirm save").click()
    await expect(settings_a.locator(".pg-note")).to_have_text("Created bot profile “Warm & short”.")
    saved = await BotProfile.objects.aget(name="Warm & short")
    assert (saved.temperature, saved.top_p, saved.max_tokens, saved.frequency_penalty) == (
        1.3,
        0.55,
        30,
        0.4,
    )
    assert await LogEntry.objects.filter(
        object_id=str(saved.pk), action_flag=ADDITION, user=lead
    ).aexists()
    await expect(page.locator("#a-profile")).to_have_value(str(saved.pk))
    await settled(settings_a)
    await page.locator("#a-profile").select_option(label="Customer service (live default)")
    await expect(page.locator("#a-temperature-num")).to_have_value("0.7")
    await expect(page.locator("#a-region")).to_have_value("Bavaria")

    # Narrow: one column, nothing wider than the screen, the question box in reach.
    await page.set_viewport_size({"width": 390, "height": 800})
    assert await page.locator("#playground").evaluate("el => el.scrollWidth <= el.clientWidth")
    await expect(page.locator("#pg-send")).to_be_in_viewport()
    # The console's sections scroll sideways inside the top bar; every one can be reached.
    assert await page.locator(".topbar").evaluate("el => el.scrollWidth <= el.clientWidth")
    sections = page.get_by_role("navigation", name="Console").get_by_role("link")
    assert await sections.count() == 7
    for link in await sections.all():
        await link.scroll_into_view_if_needed()
        await expect(link).to_be_in_viewport()
    assert errors == []
    await page.context.close()
