"""The help centre's own statements for a question (chat/knowledge/extract.py): what the answer
run quotes when the model's answer cannot be used. Over the sample help centre, through the
real index."""

import io

import pytest
from django.core.management import call_command

from chat.knowledge import extract, retrieval
from chat.knowledge.retrieval import Hit

pytestmark = pytest.mark.django_db(transaction=True)


def hit(text: str, heading: str = "Section") -> Hit:
    return Hit(
        passage_id=1,
        article_id=1,
        title="Article",
        source_url="",
        heading=heading,
        text=text,
        score=1.0,
        language="en",
        slug="a",
    )


def test_statements_are_sentences_list_items_and_table_rows_read_with_their_header():
    passage = (
        "Orders ship from Rotterdam. Parcels leave the same\nday when ordered early.\n\n"
        "| Destination | Standard delivery |\n| --- | --- |\n"
        "| Germany | 1–2 business days |\n\n- gift cards\n- plants\n\n"
        "荷兰、比利时、德国：1–2 个工作日。订单当天发出。"
    )
    assert [text for text, _ in extract.statements_of(passage)] == [
        "Orders ship from Rotterdam.",
        "Parcels leave the same day when ordered early.",
        "Germany: 1–2 business days",
        "gift cards",
        "plants",
        "荷兰、比利时、德国：1–2 个工作日。",
        "订单当天发出。",
    ]


@pytest.fixture
def sample():
    call_command("import_knowledge", "--sample", stdout=io.StringIO())
    retrieval.process_index_sync()


@pytest.mark.parametrize(
    ("question", "language", "said"),
    [
        ("How long does delivery take to Germany?", "en", "Germany: 1–2 business days"),
        ("How many days do I have to send something back?", "en", "You have 30 days"),
        ("Can you deliver my order to a PO box?", "en", "not to PO boxes"),
        ("寄到德国一般要几天？", "zh", "德国：1–2 个工作日"),
        ("收到货以后多少天之内可以退？", "zh", "30 天内"),
        # "多长时间" asks how long: its 时间 is not the repair line's "维修时间"; and a line
        # with a figure answers a question that asks for one.
        ("你们的商品保修多长时间？", "zh", "两年保修"),
        ("保修维修一般要多少天？", "zh", "7–10 个工作日"),
        # Paying in cash when the parcel arrives is cash on delivery.
        ("Can I pay in cash when the parcel arrives?", "en", "cash on delivery"),
        # "hold my order" is the page's "your order is kept".
        ("My card payment didn't go through. How long will you hold my order?", "en", "48 hours"),
        # "Which ...?" and 哪几家 ask for names: the line that lists the carriers.
        ("Which delivery companies do you work with?", "en", "PostNL, DHL or UPS"),
        ("你们用哪几家快递公司送货？", "zh", "PostNL、DHL 或 UPS"),
        # A follow-up searched with the message before it: 寄到 is the page's 配送.
        ("寄到法国要几天？\n那寄到中国呢？", "zh", "5–12 个工作日"),
    ],
)
def test_the_statements_that_answer_come_first(sample, question, language, said):
    hits = retrieval.search_sync(question=question, site_id=None, language=language)
    statements = extract.key_statements(question, hits)
    assert 1 <= len(statements) <= extract.MAX_STATEMENTS
    assert said in statements[0].text
    quoted = extract.quoted_answer(statements, language)
    assert said in quoted and statements[0].title in quoted


def test_nothing_is_quoted_for_a_question_no_statement_speaks_of():
    hits = [hit("Orders ship from Rotterdam.")]
    assert extract.key_statements("Can I pay with Bitcoin?", hits) == []
    assert extract.quoted_answer([], "en") == ""


def test_a_chinese_quote_has_chinese_punctuation_and_no_spaces():
    statements = [
        extract.Statement("荷兰、比利时、德国：1–2 个工作日", "配送与运费", 1.0),
        extract.Statement("订单当天发出。", "配送与运费", 0.9),
    ]
    assert extract.quoted_answer(statements, "zh-CN") == (
        "帮助中心的说明（配送与运费）：荷兰、比利时、德国：1–2 个工作日。订单当天发出。"
    )
