"""Personal data scrubbing (chat.pii) on English and Chinese text: what is replaced, what stays,
and the counts per kind."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from chat.pii import Scrubber, name_variants, phone_regions, scrub


def test_chinese_mobile_and_email():
    text, counts = scrub("我的手机号是13812345678，邮箱 li.wei@example.cn", language="zh-CN")
    assert text == "我的手机号是[PHONE]，邮箱 [EMAIL]"
    assert counts == {"phone": 1, "email": 1}


def test_email_next_to_chinese_keeps_the_chinese():
    text, counts = scrub("邮箱li.wei@example.cn谢谢")
    assert text == "邮箱[EMAIL]谢谢"
    assert counts == {"email": 1}


@pytest.mark.parametrize(
    "written",
    [
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "+8613812345678",
        "13812345678",
    ],
)
def test_chinese_mobile_in_its_usual_forms(written):
    text, counts = scrub(f"电话：{written}。", language="zh")
    assert text == "电话：[PHONE]。"
    assert counts == {"phone": 1}


@pytest.mark.parametrize(
    "written",
    [
        "+1 415-555-0132",
        "(415) 555-0132",
        "+44 20 7946 0958",
        "020 7946 0958",
    ],
)
def test_phone_numbers_international_and_local(written):
    text, counts = scrub(f"Call me on {written} tomorrow.", language="en")
    assert text == "Call me on [PHONE] tomorrow."
    assert counts == {"phone": 1}


def test_long_digit_runs_go_short_numbers_and_dates_stay():
    text, counts = scrub(
        "Order 12345678 (2 items) paid with card 4111 1111 1111 1111 on 2024-05-01 at 10:30, "
        "arrives in 3 days. Ref 555-0132, code 12345."
    )
    assert text == (
        "Order [NUMBER] (2 items) paid with card [NUMBER] on 2024-05-01 at 10:30, "
        "arrives in 3 days. Ref [NUMBER], code 12345."
    )
    assert counts == {"number": 3}


def test_chinese_order_number():
    text, counts = scrub("订单号20240501123已发货，共3件。", language="zh-CN")
    assert text == "订单号[NUMBER]已发货，共3件。"
    assert counts == {"number": 1}


def test_customer_name_and_its_parts_in_english():
    text, counts = scrub("Thanks Li Wei! Mr. Wei, your refund is on its way, li.", names=["Li Wei"])
    assert text == "Thanks [NAME]! Mr. [NAME], your refund is on its way, [NAME]."
    assert counts == {"name": 3}


def test_name_matching_is_whole_words():
    text, counts = scrub(
        "Anna Smith asked about bananas and Smithsonian tickets.", names=["Anna Smith"]
    )
    assert text == "[NAME] asked about bananas and Smithsonian tickets."
    assert counts == {"name": 1}


def test_chinese_name_whole_and_given_name():
    text, counts = scrub("您好王小明，小明您的订单已发货。王先生请查收。", names=["王小明"])
    assert text == "您好[NAME]，[NAME]您的订单已发货。王先生请查收。"
    assert counts == {"name": 2}


def test_given_email_is_replaced_even_in_an_unusual_form():
    text, counts = scrub(
        "write to 李伟@例子.中国 please", emails=["李伟@例子.中国"], names=["李伟"]
    )
    assert text == "write to [EMAIL] please"
    assert counts == {"email": 1}


def test_a_name_never_rewrites_a_placeholder():
    text, counts = scrub("email: a@b.io", names=["Email"])
    assert text == "[NAME]: [EMAIL]"
    assert counts == {"name": 1, "email": 1}


def test_custom_patterns_from_settings(settings):
    settings.PII_PATTERNS = [r"ORD-[A-Z0-9]+", r"会员号\S+"]
    text, counts = scrub("Your order ORD-7Q2X9 ships today. 会员号A88。")
    assert text == "Your order [REDACTED] ships today. [REDACTED]"
    assert counts == {"custom": 2}


def test_a_broken_custom_pattern_is_named(settings):
    settings.PII_PATTERNS = [r"ORD-(\d+"]
    with pytest.raises(ImproperlyConfigured, match="PII_PATTERNS: .*ORD.* is not a regex"):
        scrub("ORD-1")


def test_scrubber_adds_up_over_texts():
    scrubber = Scrubber(names=["Anna"], emails=["anna@shop.example"])
    assert scrubber.scrub("Hi Anna") == "Hi [NAME]"
    assert scrubber.scrub("anna@shop.example, +49 30 1234567") == "[EMAIL], [PHONE]"
    assert scrubber.counts == {"name": 1, "email": 1, "phone": 1}


def test_text_without_personal_data_is_unchanged():
    text = "You are the assistant of Shop. 今天是2025年1月3日，营业时间9点到18点。Reply in 2 lines."
    assert scrub(text) == (text, {})


def test_name_variants_and_phone_regions():
    assert name_variants("  Li   Wei ") == {"Li Wei", "Li", "Wei"}
    assert name_variants("J. Doe") == {"J. Doe", "Doe"}
    assert name_variants("李伟") == {"李伟"}
    assert name_variants("") == set()
    assert phone_regions("zh-CN") == ("CN", "US", "GB")
    assert phone_regions("de") == ("DE", "US", "CN", "GB")
    assert phone_regions("") == ("US", "CN", "GB")
