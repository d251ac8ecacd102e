"""A verified customer in a real Chromium: a company page embeds the widget with a customer
token its back end signed (`data-customer-token`), and later hands over a fresh one
(`CSDeskWidget.setCustomerToken`); the conversation Daphne stores is that customer's. The
answers come from the synthetic token source: what the model says does not matter here."""

import datetime as dt
import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from playwright.async_api import expect

from chat import selectors, services
from chat.models import Conversation, Site
from tests.customers.helpers import sign
from tests.e2e.test_widget import Visitor
from tests.waiting import poll

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIGNED_IN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Acme Shop: my account</title></head>
<body><h1>Hello, Ada</h1>
<script src="{desk}/static/widget/embed.js" data-site-key="{key}" data-lang="en"
        data-customer-token="{token}" async></script>
</body></html>
"""


@pytest.fixture
async def visitor(browser):
    context = await browser.new_context(viewport={"width": 420, "height": 760})
    yield Visitor(await context.new_page())
    await context.close()


def verdicts(visitor: Visitor) -> list[dict]:
    return [f for f in visitor.frames if f["type"] == "customer.verified"]


async def test_a_page_with_a_customer_token_gives_a_verified_conversation(
    synthetic_stack, host_pages, visitor
):
    site = await Site.objects.acreate(name="Acme Shop", allowed_origins=host_pages.url)
    secret = await sync_to_async(services.site_identity_secret_renew)(site=site)
    exp = int(time.time()) + 600
    token = sign(secret, "cust-42", name="Ada Lovelace", email="ada@example.com", exp=exp)
    page_file = Path(host_pages.root) / f"account-{site.pk}.html"
    page_file.write_text(
        SIGNED_IN_PAGE.format(desk=synthetic_stack.http, key=site.key, token=token)
    )

    warnings = []
    visitor.page.on("console", lambda message: warnings.append(message.text))
    await visitor.page.goto(f"{host_pages.url}/{page_file.name}")
    await visitor.open_widget()
    await poll(lambda: verdicts(visitor), timeout=15)
    assert verdicts(visitor)[0]["customer_id"] == "cust-42"
    await visitor.ask("Where is my order?")

    conversation = await Conversation.objects.aget(site=site)
    assert (conversation.customer_id, conversation.customer_name, conversation.customer_email) == (
        "cust-42",
        "Ada Lovelace",
        "ada@example.com",
    )
    assert conversation.customer_verified_until == dt.datetime.fromtimestamp(exp, dt.UTC)
    verified = await sync_to_async(selectors.verified_customer)(conversation_id=conversation.pk)
    assert verified is not None and verified.id == "cust-42"

    # The page's back end signs a fresh token before this one runs out; the open chat sends it.
    later = exp + 3600
    await visitor.page.evaluate(
        "token => window.CSDeskWidget.setCustomerToken(token)",
        sign(secret, "cust-42", exp=later),
    )
    await poll(lambda: len(verdicts(visitor)) == 2, timeout=15)
    await conversation.arefresh_from_db()
    assert conversation.customer_verified_until == dt.datetime.fromtimestamp(later, dt.UTC)

    # A token for someone else is refused quietly: the page's developer is told, the visitor
    # sees no error, and the conversation stays Ada's.
    await visitor.page.evaluate(
        "token => window.CSDeskWidget.setCustomerToken(token)", sign(secret, "cust-99")
    )
    await poll(lambda: any("another customer" in text for text in warnings), timeout=15)
    await expect(visitor.page.locator("[role=dialog]")).to_be_visible()
    assert "another customer" not in await visitor.page.locator("[role=dialog]").inner_text()
    await conversation.arefresh_from_db()
    assert conversation.customer_id == "cust-42"
    assert visitor.errors == []


async def test_a_verified_customer_confirms_a_cancellation_in_the_widget(
    synthetic_stack, host_pages, visitor, tmp_path
):
    """The widget on a company page, a customer its back end signed in, and an action on a
    back end of the test's own: the cancellation waits on its card until Confirm, then is
    called once, for that customer, and the card shows the result."""
    import io

    from django.core.management import call_command

    from tests.actions.helpers import start_back_end
    from tests.actions.test_answer_actions import actions_file

    back_end, thread = start_back_end()
    try:
        path = actions_file(tmp_path, back_end)
        await sync_to_async(call_command)("import_actions", path, stdout=io.StringIO())
        site = await Site.objects.acreate(name="Acme Shop", allowed_origins=host_pages.url)
        secret = await sync_to_async(services.site_identity_secret_renew)(site=site)
        page_file = Path(host_pages.root) / f"orders-{site.pk}.html"
        page_file.write_text(
            SIGNED_IN_PAGE.format(
                desk=synthetic_stack.http, key=site.key, token=sign(secret, "cust-42")
            )
        )
        await visitor.page.goto(f"{host_pages.url}/{page_file.name}")
        await visitor.open_widget()
        await poll(lambda: verdicts(visitor), timeout=15)
        await visitor.ask("Please cancel my order A7731")

        card = visitor.page.locator(".ac")
        await expect(card).to_have_attribute("data-s", "confirm_required")
        await expect(card).to_contain_text("Cancel order A7731?")
        assert back_end.seen == []  # nothing called before the customer says so
        await card.get_by_role("button", name="Confirm").click()
        await expect(card).to_have_attribute("data-s", "ok", timeout=15_000)
        await expect(card).to_contain_text("Order A7731: echoed")
        [request] = back_end.seen
        assert request.method == "POST" and request.path == "/echo/A7731/cancel"
        assert request.query == {"customer": ["cust-42"]}
        assert visitor.errors == []
    finally:
        back_end.server.shutdown()
        back_end.server.server_close()
        thread.join(5)
