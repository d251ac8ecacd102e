"""What the customer reads about a call: one honest sentence per failure, in English or
Chinese, the question before a write, and the series on /metrics."""

import pytest
from django.test import AsyncClient

from chat.actions import calling, texts
from chat.actions.outcome import Outcome
from tests.actions.helpers import make_action


@pytest.mark.parametrize(
    ("status", "reason", "english", "chinese"),
    [
        ("timeout", "timeout", "took too long", "超时"),
        ("bad_response", "not_json", "not in a way I could read", "无法读取"),
        ("error", "unreachable", "couldn't complete that", "无法完成"),
        ("refused", "missing_secret", "connect you with a human agent", "人工客服"),
        ("refused", "limit_conversation", "can't look anything else up", "无法再查询"),
    ],
)
def test_each_failure_gets_one_sentence_per_language(status, reason, english, chinese):
    outcome = Outcome(status=status, reason=reason)
    assert english in outcome.customer_text("en")
    assert chinese in outcome.customer_text("zh-CN")
    assert outcome.customer_text("fr") == outcome.customer_text("en")
    for sentence in (outcome.customer_text("en"), outcome.customer_text("zh")):
        assert "\n" not in sentence and "missing_secret" not in sentence


def test_the_question_before_a_write_shows_its_arguments():
    asked = texts.confirmation(
        confirm_text="Cancel order {order_id}.",
        description="Cancel an order.",
        arguments={"order_id": "A1002"},
        language="en",
    )
    assert asked == "Shall I go ahead? Cancel order A1002."
    plain = texts.confirmation(
        confirm_text="", description="Cancel an order.", arguments={}, language="zh"
    )
    assert plain == "要继续吗？我将执行以下操作：Cancel an order。"
    assert texts.cancelled("en") == "All right, I haven't done it."


def test_braces_in_an_argument_are_shown_not_formatted():
    asked = texts.confirmation(
        confirm_text="Cancel order {order_id}.",
        description="",
        arguments={"order_id": "{what.__class__}"},
        language="en",
    )
    assert asked == "Shall I go ahead? Cancel order {what.__class__}."


async def test_action_series_are_on_the_metrics_page(back_end):
    action = make_action(
        name="scraped_probe", url=f"{back_end.url}/orders/{{order_id}}?c={{customer.id}}"
    )
    await calling.call(action, {"order_id": "A1001"}, customer_id="c-1")
    page = (await AsyncClient().get("/metrics")).content.decode()
    assert 'cs_chat_action_calls_total{action="scraped_probe",outcome="ok"} 1.0' in page
    assert 'cs_chat_action_call_seconds_count{action="scraped_probe"} 1.0' in page
