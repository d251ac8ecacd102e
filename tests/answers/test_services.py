import datetime as dt
import importlib

import pytest

from chat import fallback, selectors, services
from chat.models import BotProfile, Conversation, FallbackRule, Message
from chat.prompting import (
    DEFAULT_PROFILE_NAME,
    DEFAULT_SYSTEM_PROMPT,
    laid_out,
    language_name,
    local_time,
    render_system_prompt,
)

pytestmark = pytest.mark.django_db


def test_conversation_start_stores_only_the_token_hash():
    conversation, token = services.conversation_start(language="en", region="Paris")
    assert len(token) >= 40
    assert token not in conversation.token_hash
    assert conversation.token_hash == selectors.hash_token(token)
    assert (
        selectors.conversation_for_customer(conversation_id=str(conversation.id), token=token)
        == conversation
    )


@pytest.mark.parametrize(
    "conversation_id, token",
    [
        (None, "wrong"),
        ("nonsense", None),
        ("00000000-0000-0000-0000-000000000000", None),
    ],
)
def test_conversation_lookup_refuses_wrong_token_or_id(conversation_id, token):
    conversation, real = services.conversation_start()
    found = selectors.conversation_for_customer(
        conversation_id=conversation_id or str(conversation.id), token=token or real
    )
    assert found is None


def test_customer_message_is_stored_once_per_client_id():
    conversation, _ = services.conversation_start()
    first, created = services.message_add_customer(
        conversation=conversation, text="hi", client_id="a"
    )
    again, created_again = services.message_add_customer(
        conversation=conversation, text="hi", client_id="a"
    )
    assert created and not created_again and first.pk == again.pk
    other, created_other = services.message_add_customer(
        conversation=conversation, text="hi", client_id=None
    )
    assert created_other and other.pk != first.pk
    assert Message.objects.filter(conversation=conversation).count() == 2
    conversation.refresh_from_db()
    assert conversation.last_message_at is not None


def test_a_resend_after_the_conversation_closed_gets_the_stored_message_back():
    conversation, _ = services.conversation_start()
    first, _ = services.message_add_customer(conversation=conversation, text="hi", client_id="a")
    services.conversation_close(conversation=conversation, closed_by="The customer")
    again, created = services.message_add_customer(
        conversation=conversation, text="hi", client_id="a"
    )
    assert again.pk == first.pk and not created
    with pytest.raises(services.ConversationClosed):
        services.message_add_customer(conversation=conversation, text="more", client_id="b")


def test_same_client_id_in_two_conversations_is_two_messages():
    a, _ = services.conversation_start()
    b, _ = services.conversation_start()
    services.message_add_customer(conversation=a, text="x", client_id="same")
    _, created = services.message_add_customer(conversation=b, text="x", client_id="same")
    assert created


def test_bot_message_is_partial_until_finished():
    conversation, _ = services.conversation_start()
    message = services.bot_message_start(conversation=conversation, model_name="m")
    assert message.is_partial and message.text == ""
    services.bot_message_finish(
        message=message,
        text="answer",
        finish_reason="stop",
        partial=False,
        prompt_tokens=10,
        completion_tokens=2,
        ttft_ms=50,
        total_ms=90,
    )
    message.refresh_from_db()
    assert (message.text, message.is_partial, message.prompt_tokens, message.ttft_ms) == (
        "answer",
        False,
        10,
        50,
    )


def test_partial_texts_of_many_answers_are_saved_together_and_an_ended_one_is_left(monkeypatch):
    monkeypatch.setattr(services, "PARTIAL_SAVE_CHUNK", 2)  # three answers: two statements
    conversation, _ = services.conversation_start()
    streaming = [
        services.bot_message_start(conversation=conversation, model_name="m") for _ in range(3)
    ]
    ended = services.bot_message_start(conversation=conversation, model_name="m")
    services.bot_message_finish(
        message=ended,
        text="the whole answer",
        finish_reason="stop",
        partial=False,
        prompt_tokens=1,
        completion_tokens=1,
        ttft_ms=1,
        total_ms=1,
    )
    texts = {m.pk: f"so far {i} 'quoted' ünïcode" for i, m in enumerate(streaming)}
    services.bot_messages_save_partial(texts={**texts, ended.pk: "a late partial"})
    saved = dict(Message.objects.filter(pk__in=texts).values_list("pk", "text"))
    assert saved == texts
    ended.refresh_from_db()
    assert ended.text == "the whole answer" and not ended.is_partial


def test_recent_turns_skip_empty_and_system_messages_and_keep_order():
    conversation, _ = services.conversation_start()
    for i in range(6):
        services.message_add_customer(conversation=conversation, text=f"q{i}", client_id=str(i))
    services.bot_message_start(conversation=conversation, model_name="m")  # empty: skipped
    Message.objects.create(conversation=conversation, role=Message.Role.SYSTEM, text="note")
    turns = selectors.recent_turns(conversation_id=conversation.id, limit=3)
    assert [t["text"] for t in turns] == ["q3", "q4", "q5"]


def test_unanswered_question_is_the_newest_customer_turn():
    conversation, _ = services.conversation_start()
    assert selectors.unanswered_question(conversation_id=conversation.id) is None
    q, _ = services.message_add_customer(conversation=conversation, text="q", client_id="1")
    assert selectors.unanswered_question(conversation_id=conversation.id) == q
    services.bot_message_start(conversation=conversation, model_name="m")  # empty: still owed
    assert selectors.unanswered_question(conversation_id=conversation.id) == q
    services.bot_message_fallback(conversation=conversation, text="sorry", reason="timeout")
    assert selectors.unanswered_question(conversation_id=conversation.id) is None


def test_default_profile_comes_from_the_migration_and_can_be_replaced():
    # The migration's own step, on a table an earlier transactional test may have emptied
    # (its rows are there only until the first flush): it creates the profile once.
    from django.apps import apps

    migration = importlib.import_module("chat.migrations.0002_default_bot_profile")
    BotProfile.objects.all().delete()
    migration.create_default_profile(apps, None)
    migration.create_default_profile(apps, None)
    assert BotProfile.objects.filter(is_default=True).count() == 1
    conversation, _ = services.conversation_start()
    profile = selectors.bot_profile_for(conversation)
    assert profile.pk is not None and profile.name == DEFAULT_PROFILE_NAME
    assert "{language}" in profile.system_prompt
    custom = BotProfile.objects.create(name="VIP", system_prompt="VIP desk")
    Conversation.objects.filter(pk=conversation.pk).update(bot_profile=custom)
    conversation.refresh_from_db()
    assert selectors.bot_profile_for(conversation).system_prompt == "VIP desk"


def test_system_prompt_variables_are_filled_and_unknown_ones_kept():
    now = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
    text = render_system_prompt(
        "{site_name} {current_time} {user_region} {language} {unknown} {{literal}}",
        site_name="Acme",
        language="zh-CN",
        region="Shanghai",
        timezone="Asia/Shanghai",
        now=now,
    )
    assert (
        text == "Acme Sunday 2026-03-01 20:30 CST Shanghai Simplified Chinese {unknown} {literal}"
    )


def test_the_lines_with_a_conversations_variables_go_after_the_rules():
    # As an admin might write it: the time first. Rendered, every conversation of the
    # profile starts with the same rules (vLLM's prefix cache reuses them) and its own
    # facts follow.
    template = (
        "It is {current_time}. You serve customers in {user_region}.\n"
        "- Be brief.\n\n- Never invent prices.\n"
        "Answer in {language}. Literal {{braces}} stay."
    )
    now = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
    one, other = (
        render_system_prompt(
            template, site_name="", language=language, region=region, timezone="", now=when
        )
        for language, region, when in (
            ("en", "Berlin", now),
            ("zh-CN", "Shanghai", now + dt.timedelta(minutes=5)),
        )
    )
    rules = "- Be brief.\n\n- Never invent prices.\nAnswer in"
    assert one.startswith("- Be brief.\n\n- Never invent prices.\n\nIt is Sunday 2026-03-01 12:30")
    assert one.split("\n\nIt is")[0] == other.split("\n\nIt is")[0]
    assert one.endswith("Answer in English. Literal {braces} stay.")
    assert rules not in one  # the line with {language} moved too
    # The shipped default is laid out so already; a template of variables only is as written.
    assert laid_out(DEFAULT_SYSTEM_PROMPT) == DEFAULT_SYSTEM_PROMPT
    assert laid_out("{site_name}\n{language}") == "{site_name}\n{language}"


def test_broken_template_is_used_as_written():
    assert (
        render_system_prompt(
            "hello {",
            site_name="",
            language="",
            region="",
            timezone="",
            now=dt.datetime.now(dt.UTC),
        )
        == "hello {"
    )


def test_language_names_and_time_zones_degrade_gracefully():
    assert language_name("en-US") == "English"
    assert language_name("xx-YY") == "xx-YY"
    assert language_name("") == "the customer's language"
    now = dt.datetime(2026, 1, 1, 0, 0, tzinfo=dt.UTC)
    assert local_time(now, "Not/AZone").endswith("UTC")


def test_fallback_rules_match_keywords_language_and_priority():
    FallbackRule.objects.create(
        name="refund zh", keywords="退款", language="zh", answer="退款说明", priority=1
    )
    FallbackRule.objects.create(
        name="refund", keywords="refund, money back", answer="Refunds take 5 days.", priority=2
    )
    FallbackRule.objects.create(
        name="off", keywords="refund", answer="never", priority=0, enabled=False
    )
    rules = fallback.load_rules()
    assert (
        fallback.choose_answer(rules, text="I want my MONEY BACK", language="en")
        == "Refunds take 5 days."
    )
    assert fallback.choose_answer(rules, text="我要退款", language="zh-CN") == "退款说明"
    assert fallback.choose_answer(rules, text="我要退款", language="en") != "退款说明"
    assert "team" in fallback.choose_answer(rules, text="hello", language="de")
    assert "客服" in fallback.choose_answer(rules, text="你好", language="zh-TW")
