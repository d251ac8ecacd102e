"""Grounded answers with the real model: after `import_knowledge --sample`, a customer's
question about shipping, in English and in Chinese, gets an answer from the real stack whose
bot.done lists the shipping article as its source; an edit made in another process reaches
the stack's Daphne at its next question."""

import io
import json
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from django.core.management import call_command

from chat.knowledge import services as knowledge_services
from chat.knowledge import version
from chat.knowledge.models import Article
from tests.e2e.test_real_stack import frames_until, open_chat

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def sample(real_stack):
    await sync_to_async(call_command)("import_knowledge", "--sample", stdout=io.StringIO())
    # The import told this process's Redis; the stack's processes read their own.
    client = redis.Redis.from_url(real_stack.redis_url)
    client.set(version.KEY, uuid.uuid4().hex)
    client.close()


@pytest.mark.parametrize(
    ("lang", "question"),
    [
        ("en", "How long does delivery to Germany take?"),
        ("zh-CN", "寄到德国要几天？"),
    ],
)
async def test_a_question_about_an_article_names_it_as_the_source(
    real_stack, sample, lang, question
):
    ws, _conversation = await open_chat(real_stack, f"lang={lang}")
    await ws.send(json.dumps({"type": "message", "text": question, "client_id": "q1"}))
    frames = await frames_until(ws, "bot.done")
    await ws.close()
    done = frames[-1]
    assert done["fallback"] is False
    shipping = await Article.objects.aget(slug="shipping", language=lang.split("-")[0])
    assert {"article_id": shipping.pk, "title": shipping.title, "url": shipping.source_url} in done[
        "sources"
    ]


async def test_an_edit_reaches_the_daphne_process_at_its_next_question(real_stack, sample):
    async def ask() -> dict:
        ws, _ = await open_chat(real_stack, "lang=en")
        await ws.send(
            json.dumps(
                {
                    "type": "message",
                    "text": "How long does delivery to Germany take?",
                    "client_id": "q",
                }
            )
        )
        done = (await frames_until(ws, "bot.done"))[-1]
        await ws.close()
        return done

    before = await ask()  # Daphne's index now holds the sample
    shipping = await Article.objects.aget(slug="shipping", language="en")
    assert shipping.title in [s["title"] for s in before["sources"]]
    await sync_to_async(knowledge_services.article_update)(
        article=shipping, title="Delivery to every country"
    )
    client = redis.Redis.from_url(real_stack.redis_url)  # as the edit's own bump would
    client.set(version.KEY, uuid.uuid4().hex)
    client.close()
    after = await ask()
    assert "Delivery to every country" in [s["title"] for s in after["sources"]]
