import pytest
from django.conf import settings

from chat.handoff_phrases import accepts_offer, asks_for_human


def asks(text):
    return asks_for_human(text, settings.CHAT["HANDOFF_PHRASES"])


@pytest.mark.parametrize(
    "text",
    [
        "人工",
        "转人工！",
        "我要找人工客服",
        "human",
        "Can I talk to a HUMAN please?",
        "agent",
        "I want an agent.",
        "real person pls",
        "给我转真人",
    ],
)
def test_requests_for_a_human(text):
    assert asks(text)


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "humanitarian aid?",
        "agents of change are great" + " really" * 20,
        "My browser's user agent string is Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome",
        "工作",
        "reagent",
    ],
)
def test_other_messages(text):
    assert not asks(text)


def test_yes_to_an_offer_of_a_human():
    offer = "I'm not sure. Would you like me to connect you with a human agent?"
    kwargs = {
        "offers": settings.CHAT["HANDOFF_OFFERS"],
        "affirmatives": settings.CHAT["HANDOFF_AFFIRMATIVES"],
    }
    assert accepts_offer("Yes please!", offer, **kwargs)
    assert accepts_offer("好的", "需要为您转接人工客服吗？", **kwargs)
    assert not accepts_offer("yes", "Your order ships tomorrow. Anything else?", **kwargs)
    assert not accepts_offer("yes, but what about my refund?", offer, **kwargs)
    assert not accepts_offer("yes", "", **kwargs)
