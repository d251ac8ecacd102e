"""Answers grounded in the knowledge base, end to end through the chat API, the answer run and
an in-process worker on the synthetic token source (which records the prompt it was given):
the passages reach the prompt, the articles come back as sources, another site's articles
never do, the profile's no-knowledge choice, and the token budget with passages."""

import io

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from chat import guards
from chat.knowledge import grounding
from chat.knowledge import services as knowledge_services
from chat.models import BotProfile, Message, Site
from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT
from inference_worker.synthetic import chatml
from tests.api.helpers import chat, make_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def sample():
    await sync_to_async(call_command)("import_knowledge", "--sample", stdout=io.StringIO())


async def default_profile(**fields) -> BotProfile:
    profile, _ = await BotProfile.objects.aupdate_or_create(
        is_default=True,
        defaults={"name": DEFAULT_PROFILE_NAME, "system_prompt": DEFAULT_SYSTEM_PROMPT, **fields},
    )
    return profile


def last_prompt(engine) -> str:
    return list(engine.prompts.values())[-1]


@pytest.mark.parametrize(
    ("question", "language", "title"),
    [
        ("How long does delivery to Germany take?", "en", "Shipping and delivery"),
        ("寄到德国要几天？", "zh", None),
    ],
)
async def test_an_answer_lists_the_article_it_was_grounded_in(
    sample, worker, engine, question, language, title
):
    api = await make_client()
    body = (await chat(api, session_id="s", user_input=question, language=language)).json()
    (source,) = body["sources"]
    article = await knowledge_services.Article.objects.aget(pk=source["article_id"])
    assert article.slug == "shipping" and article.language.startswith(language)
    assert source["title"] == article.title and source["url"] == article.source_url
    if title:
        assert source["title"] == title
    prompt = last_prompt(engine)
    assert grounding.GROUNDED in prompt and f"[1] {article.title}" in prompt
    stored = await Message.objects.aget(pk=body["message_id"])
    assert stored.sources == body["sources"]


async def test_another_sites_articles_never_reach_a_conversation(worker, engine):
    shop = await Site.objects.acreate(name="Shop", allowed_origins="https://shop.example")
    other = await Site.objects.acreate(name="Other", allowed_origins="https://other.example")
    await sync_to_async(knowledge_services.article_create)(
        title="Secret discount codes",
        body="# Secret discount codes\n\nUse STAFF50 for half off every order.",
        site_id=shop.pk,
    )
    api = await make_client_for(other)
    body = (await chat(api, session_id="s", user_input="Is there a discount code?")).json()
    assert body["sources"] == [] and "STAFF50" not in last_prompt(engine)

    own = await make_client_for(shop)
    body = (await chat(own, session_id="s", user_input="Is there a discount code?")).json()
    assert [s["title"] for s in body["sources"]] == ["Secret discount codes"]


async def make_client_for(site):
    from chat.api.keys import create_api_key
    from tests.api.helpers import KeyClient

    _key, secret = await sync_to_async(create_api_key)(name=site.name, site=site, scopes=["chat"])
    return KeyClient(secret)


async def test_nothing_relevant_found_answers_generally_when_the_profile_says_so(
    sample, worker, engine
):
    await default_profile(when_no_knowledge="general")
    api = await make_client()
    body = (
        await chat(api, session_id="s", user_input="Who won the football world cup in 2018?")
    ).json()
    assert body["sources"] == [] and body["guards"] == []
    prompt = last_prompt(engine)
    assert grounding.GROUNDED not in prompt
    assert grounding.NOTHING_FOUND_OFFER_HUMAN not in prompt


async def test_nothing_relevant_found_the_product_says_so_and_offers_a_human(
    sample, worker, engine
):
    """ "Say so and offer a human" is the product's answer, not a rule the model is asked to
    follow: the model is not asked at all."""
    await default_profile(when_no_knowledge="offer_human")
    api = await make_client()
    body = (
        await chat(api, session_id="s", user_input="Who won the football world cup in 2018?")
    ).json()
    assert engine.prompts == {}
    assert body["response"] == guards.text(guards.NOT_COVERED, "en")
    assert body["finish_reason"] == "not_covered" and body["guards"] == ["not_covered"]
    assert body["offer_human"] is True and body["fallback"] is False
    stored = await Message.objects.aget(pk=body["message_id"])
    assert stored.guards == "not_covered" and stored.text == body["response"]

    body = (
        await chat(api, session_id="zh", user_input="你们的实体店在哪里？", language="zh-CN")
    ).json()
    assert body["response"] == guards.text(guards.NOT_COVERED, "zh-CN")
    assert engine.prompts == {}


async def test_the_openai_endpoint_keeps_openais_semantics_when_nothing_is_found(
    sample, worker, engine
):
    """OpenAI's clients expect the model's answer: no product text, the model is asked."""
    await default_profile(when_no_knowledge="offer_human")
    from chat.models import ApiScope
    from tests.api.helpers import complete

    api = await make_client(scopes=(ApiScope.OPENAI,))
    response = await complete(
        api, messages=[{"role": "user", "content": "Who won the football world cup in 2018?"}]
    )
    assert response.json()["choices"][0]["message"]["content"] == engine.reply("")
    assert len(engine.prompts) == 1


async def test_without_any_articles_nothing_is_claimed(worker, engine):
    await default_profile(when_no_knowledge="offer_human")
    api = await make_client()
    await chat(api, session_id="s", user_input="Who won the football world cup in 2018?")
    assert grounding.NOTHING_FOUND_OFFER_HUMAN not in last_prompt(engine)


def test_the_budget_cuts_old_turns_before_passages_and_passages_last_first():
    from inference_worker.budget import ContextOverflow, fit_grounded
    from inference_worker.protocol import grounded_system

    def tokenize(messages):
        return [ord(c) for c in chatml(messages)]

    system = {"role": "system", "content": "SYSTEM"}
    history = [
        {"role": "user", "content": "old question " * 20},
        {"role": "assistant", "content": "old answer " * 20},
    ]
    newest = {"role": "user", "content": "newest question"}
    grounding_ = {"instruction": "USE THESE", "passages": ["P1 " * 30, "P2 " * 30, "P3 " * 30]}
    messages = [system, *history, newest]

    def size(kept, with_history):
        prompt_system = {**system, "content": grounded_system("SYSTEM", grounding_, kept)}
        return len(tokenize([prompt_system, *(history if with_history else []), newest]))

    # Everything fits: all kept.
    fitting, trimmed, _ids, kept = fit_grounded(messages, tokenize, size(3, True), grounding_)
    assert (trimmed, kept) == (0, 3) and len(fitting) == 4
    # Room for the passages but not the history: the history goes, the passages stay.
    fitting, trimmed, _ids, kept = fit_grounded(messages, tokenize, size(3, False), grounding_)
    assert (trimmed, kept) == (2, 3) and [m["role"] for m in fitting] == ["system", "user"]
    assert "P3" in fitting[0]["content"]
    # Less room: the last passages go first, and the history with them.
    fitting, trimmed, _ids, kept = fit_grounded(messages, tokenize, size(1, False), grounding_)
    assert kept == 1 and "P1" in fitting[0]["content"] and "P2" not in fitting[0]["content"]
    # No room for any passage: the answer goes on without them.
    _f, _t, _i, kept = fit_grounded(messages, tokenize, size(0, False), grounding_)
    assert kept == 0
    with pytest.raises(ContextOverflow):
        fit_grounded(messages, tokenize, size(0, False) - 1, grounding_)


async def test_the_stored_prompt_and_sources_are_what_the_worker_kept(sample, worker, engine):
    engine.max_model_len = 1600  # the synthetic source counts a token a character
    api = await make_client()
    body = (
        await chat(
            api,
            session_id="s",
            user_input="How long does delivery to Germany take?",
            max_tokens=100,
        )
    ).json()
    stored = await Message.objects.aget(pk=body["message_id"])
    assert stored.prompt[0]["content"] in last_prompt(engine)  # exactly what the model saw
    shown = stored.prompt[0]["content"].count("\n[")
    assert 0 < shown < 3  # the budget held some passages, not all
    assert body["sources"] == stored.sources and len(stored.sources) <= shown


async def test_a_follow_up_is_searched_with_the_message_before_it(sample, worker, engine):
    # "那寄到中国呢？" alone finds the customs section (it names 中国大陆); with the question
    # before it, the delivery times that answer it.
    api = await make_client()
    await chat(api, session_id="s", user_input="寄到法国要几天？", language="zh-CN")
    await chat(api, session_id="s", user_input="那寄到中国呢？", language="zh-CN")
    prompt = last_prompt(engine)
    assert "中国大陆及世界其他地区：5–12 个工作日" in prompt.split("那寄到中国呢")[0]


def test_passages_are_bounded_in_the_prompt(settings):
    from chat.knowledge.retrieval import Hit

    settings.KNOWLEDGE = {**settings.KNOWLEDGE, "PROMPT_CHARS": 300, "PROMPT_PASSAGES": 3}
    hits = [
        Hit(
            passage_id=i,
            article_id=i // 2,
            title=f"Article {i // 2}",
            source_url=f"https://x.example/{i}",
            heading="",
            text="word " * 40,
            score=1.0,
            language="en",
            slug=f"a{i}",
        )
        for i in range(4)
    ]
    grounded = grounding.ground("SYSTEM", hits, offer_human_when_nothing=False)
    passages = grounded.grounding["passages"]
    assert grounded.system_prompt == "SYSTEM"  # the worker adds the passages it has room for
    assert sum(map(len, passages)) <= 300 and len(passages) == 1
    assert passages[0].startswith("[1] Article 0")
    assert grounded.sources_of(3) == [
        {"article_id": 0, "title": "Article 0", "url": "https://x.example/0"}
    ]


async def test_the_console_shows_the_sources_and_passages_of_an_answer(sample, worker, engine):
    from django.contrib.auth import get_user_model
    from django.test import AsyncClient

    api = await make_client()
    body = (
        await chat(api, session_id="s", user_input="How long does delivery to Germany take?")
    ).json()
    agent = await sync_to_async(get_user_model().objects.create_user)(
        "agent", password="x", is_staff=True
    )
    client = AsyncClient()
    await sync_to_async(client.force_login)(agent)
    pane = (await client.get(f"/console/c/{body['conversation_id']}/")).content.decode()
    assert "Sources: Shipping and delivery" in pane
    assert 'href="https://help.acorn-and-pine.example/en/shipping"' in pane
    assert pane.count('class="msg__passage"') >= 1 and "[1] Shipping and delivery" in pane


async def test_admin_shows_sources_and_filters_answers_without_them(sample, worker, engine):
    from django.contrib.auth import get_user_model
    from django.test import AsyncClient

    api = await make_client()
    grounded = (
        await chat(api, session_id="a", user_input="How long does delivery to Germany take?")
    ).json()
    general = (
        await chat(api, session_id="b", user_input="Who won the football world cup in 2018?")
    ).json()
    admin_user = await sync_to_async(get_user_model().objects.create_superuser)(
        "boss", password="x"
    )
    client = AsyncClient()
    await sync_to_async(client.force_login)(admin_user)

    def ids(page: str) -> set[int]:
        return {m.pk for m in page.context["cl"].result_list}

    with_sources = await client.get("/admin/chat/message/", {"sources": "yes"})
    without = await client.get("/admin/chat/message/", {"sources": "no"})
    assert ids(with_sources) == {grounded["message_id"]}
    assert ids(without) == {general["message_id"]}
    assert "Shipping and delivery" in with_sources.content.decode()


async def test_a_complaint_nothing_covers_gets_an_apology_before_the_offer_of_a_human(
    sample, worker, engine
):
    await default_profile(when_no_knowledge="offer_human")
    api = await make_client()
    body = (
        await chat(api, session_id="s", user_input="Your service is terrible, I am so angry!")
    ).json()
    assert engine.prompts == {}
    assert body["response"] == " ".join(
        (guards.text("apology", "en"), guards.text(guards.NOT_COVERED, "en"))
    )
    assert body["guards"] == ["complaint", "not_covered"]
    assert body["finish_reason"] == "not_covered" and body["offer_human"] is True
