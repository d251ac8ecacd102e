"""The scorecard's scoring (chat/scorecard/scoring.py): each measure passes a good answer and
fails the answer it exists to catch."""

import pytest

from chat.scorecard import phrases, scoring
from chat.scorecard.questions import Case
from chat.scorecard.records import HANDOFF, Answer, CaseScore
from chat.scorecard.scoring import LengthLimits, normalise


def case(
    expect="answer",
    language="en",
    turns=("How long does delivery to Germany take?",),
    facts=(("1–2 business days", "one to two business days"),),
) -> Case:
    return Case(
        id="c",
        category="test",
        language=language,
        turns=tuple(turns),
        expect=expect,
        facts=tuple(tuple(f) for f in facts),
    )


def score(the_case: Case, *texts: str, **flags) -> CaseScore:
    return scoring.score_case(
        the_case,
        [Answer(question=q, text=t, **flags) for q, t in zip(the_case.turns, texts, strict=False)],
    )


# --- normalising and facts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Delivery: **1 – 2** Business Days", "delivery: 1-2 business days"),
        ("１－２ 个工作日", "1-2个工作日"),  # full-width digits and dash, no space by Chinese
        ("1 to 2 days", "1-2 days"),
        ("1至2个工作日", "1-2个工作日"),
        ("We don’t accept it", "we don't accept it"),
        ("It costs €  9.95", "it costs €9.95"),
    ],
)
def test_normalise(text, expected):
    assert normalise(text) == expected


def test_a_fact_is_found_in_any_of_its_wordings_and_spellings():
    fact = ("1–2 business days", "one to two business days")
    assert scoring.fact_found("Germany takes 1-2 business days.", fact)
    assert scoring.fact_found("It takes One to Two business days", fact)
    assert scoring.fact_found("about 1 to 2 business days", fact)
    assert not scoring.fact_found("It takes 2-4 business days.", fact)
    assert scoring.fact_found("寄到德国需要１–２个工作日。", ("1-2 个工作日",))


def test_a_fact_is_found_only_as_a_whole_word():
    assert not scoring.fact_found("You have 130 days.", ("30 days",))
    assert not scoring.fact_found("Ask our groups.", ("UPS",))
    assert scoring.fact_found("Sent with UPS.", ("UPS",))


def test_a_missing_fact_fails_the_case():
    result = score(case(), "Delivery to Germany takes 2–4 business days.")
    assert not result.passed
    assert result.facts_found == 0 and result.missing_facts == [
        ("1–2 business days", "one to two business days")
    ]
    assert any(reason.startswith("missing fact") for reason in result.reasons)

    good = score(case(), "Delivery to Germany takes 1–2 business days.")
    assert good.passed, good.reasons
    assert good.facts_found == good.facts_expected == 1


# --- language ---------------------------------------------------------------------------------


def test_a_chinese_case_needs_a_mostly_han_answer():
    zh = case(language="zh-CN", facts=(("1-2个工作日",),))
    assert score(zh, "寄到德国需要1–2个工作日。").passed
    wrong = score(zh, "Delivery to Germany takes 1-2个工作日, usually 1-2 business days.")
    assert not wrong.passed and not wrong.answers[0].language_ok
    assert any("wrong language" in reason for reason in wrong.reasons)


def test_brand_names_do_not_make_a_chinese_answer_english():
    text = (
        "我们支持 Visa、Mastercard、American Express、银联卡、PayPal、支付宝、微信支付、"
        "Apple Pay 和 Klarna。企业客户还可以银行转账。"
    )
    assert scoring.language_ok(text, "zh-CN")
    assert not scoring.language_ok(text, "en")


def test_an_english_case_must_not_be_answered_in_chinese():
    result = score(case(facts=(("1-2",),)), "寄到德国需要1-2个工作日。")
    assert not result.passed and not result.answers[0].language_ok


def test_an_empty_answer_fails():
    result = score(case(expect="greeting", facts=()), "")
    assert not result.passed and "empty answer" in result.reasons


# --- loops ------------------------------------------------------------------------------------


def test_a_looping_answer_fails():
    looping = "Delivery takes 1-2 business days. " + "Thank you for your order, " * 4
    result = score(case(), looping)
    assert not result.passed and result.answers[0].loop is not None
    assert any(reason.startswith("loops") for reason in result.reasons)


@pytest.mark.parametrize(
    "text",
    [
        "the the the the the the",
        "谢谢您的耐心等待，谢谢您的耐心等待，谢谢您的耐心等待。",
        "Please check your e-mail for the link. We will look into it. Please check your e-mail "
        "for the link.",
    ],
)
def test_loops_of_words_characters_and_sentences_are_found(text):
    assert scoring.find_loop(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "Netherlands, Belgium, Germany: 1–2 business days. Rest of the EU: 2–4 business days. "
        "UK, Switzerland, Norway: 3–6 business days. Rest of the world: 5–12 business days.",
        "荷兰、比利时、德国：1–2 个工作日；欧盟其他国家：2–4 个工作日；英国、瑞士、挪威：3–6 个工作日；"
        "中国大陆及世界其他地区：5–12 个工作日。",
    ],
)
def test_a_list_with_a_repeated_unit_is_no_loop(text):
    assert scoring.find_loop(text) is None


# --- length -----------------------------------------------------------------------------------


def test_an_overlong_answer_fails_and_the_limit_is_configurable():
    text = "Delivery to Germany takes 1–2 business days. " + " ".join(
        f"word{i}" for i in range(100)
    )
    result = scoring.score_case(case(), [Answer(question="q", text=text)])
    assert not result.passed and result.answers[0].over_limit
    assert result.answers[0].loop is None
    assert any(reason.startswith("too long") for reason in result.reasons)
    roomy = scoring.score_case(
        case(), [Answer(question="q", text=text)], LengthLimits(max_words=200)
    )
    assert not roomy.answers[0].over_limit


def test_chinese_length_counts_han_characters():
    text = "配" * 151
    assert scoring.answer_length(text, "zh-CN") == 151
    assert scoring.check_answer(text, "zh-CN").over_limit
    assert not scoring.check_answer("配" * 150, "zh-CN").over_limit


# --- expected behaviour -----------------------------------------------------------------------


def test_not_covered_needs_saying_so_and_offering_a_human():
    nc = case(expect="not_covered", facts=())
    assert score(
        nc, "Sorry, I couldn't find that in our help centre. Shall I connect you with a colleague?"
    ).passed
    no_human = score(nc, "I'm sorry, I don't have any information about our opening hours.")
    assert not no_human.passed and not no_human.offers_human
    assert any("offers no human" in reason for reason in no_human.reasons)
    invented = score(nc, "We are open from 9 to 5 every day.")
    assert not invented.passed and not invented.says_not_covered


def test_the_products_offer_human_flag_counts_as_an_offer():
    nc = case(expect="not_covered", facts=())
    result = score(nc, "I don't have information about that.", offer_human=True)
    assert result.passed and result.offers_human


def test_a_complaint_needs_an_apology_and_a_human():
    complaint = case(expect="complaint", facts=())
    assert score(complaint, "I'm so sorry about that. Shall I connect you with a colleague?").passed
    assert score(
        case(expect="complaint", language="zh-CN", facts=()),
        "很抱歉给您带来不好的体验，我可以为您转接人工客服。",
    ).passed
    unapologetic = score(complaint, "I can connect you with a human agent.")
    assert not unapologetic.passed and "no apology" in unapologetic.reasons[0]


def test_a_greeting_greets_and_states_no_figures():
    greeting = case(expect="greeting", facts=())
    assert score(greeting, "Hello! How can I help you today?").passed
    assert score(
        case(expect="greeting", language="zh-CN", facts=()), "您好！请问有什么可以帮您？"
    ).passed
    invented = score(greeting, "Hello! Shipping is free over €50.")
    assert not invented.passed and any("figure" in reason for reason in invented.reasons)


def test_asking_for_details_means_asking_for_the_order_number_or_e_mail():
    details = case(expect="ask_details", facts=())
    assert score(details, "Could you tell me your order number, please?").passed
    assert score(
        case(expect="ask_details", language="zh-CN", facts=()), "请提供您的订单号，以便为您查询。"
    ).passed
    assert not score(details, "Orders usually arrive within a week.").passed
    # Mentioning an e-mail in passing is not asking for it.
    assert not score(details, "We sent the tracking link in an e-mail.").passed


@pytest.mark.parametrize(
    ("lexicon", "text"),
    [
        (phrases.offers_human, "I can put you through to our support team."),
        (phrases.offers_human, "需要为您转接人工客服吗？"),
        (phrases.apologises, "We apologise for the delay."),
        (phrases.apologises, "对不起，给您添麻烦了。"),
        (phrases.says_not_covered, "Our help centre doesn't cover that."),
        (phrases.says_not_covered, "抱歉，帮助中心没有找到相关信息。"),
    ],
)
def test_the_lexicons_know_both_languages(lexicon, text):
    assert lexicon(normalise(text))


# --- two turns and how an answer came --------------------------------------------------------


def test_a_follow_up_scores_the_facts_of_the_last_answer_only():
    follow = case(
        turns=("How long does delivery to Germany take?", "And to the UK?"),
        facts=(("3-6 business days",),),
    )
    assert score(follow, "1–2 business days.", "3–6 business days.").passed
    result = score(follow, "3–6 business days.", "1–2 business days.")
    assert not result.passed and result.missing_facts == [("3-6 business days",)]


def test_the_first_answer_of_a_follow_up_must_keep_the_rules():
    follow = case(
        turns=("How long does delivery to Germany take?", "And to the UK?"),
        facts=(("3-6 business days",),),
    )
    result = score(follow, "德国需要一到两个工作日。", "3–6 business days.")
    assert not result.passed
    assert result.reasons[0].startswith("answer 1 of 2: wrong language")


def test_a_follow_up_left_unanswered_fails():
    follow = case(
        turns=("How long does delivery to Germany take?", "And to the UK?"),
        facts=(("3-6 business days",),),
    )
    result = score(follow, "1–2 business days.")
    assert not result.passed and "only 1 of 2 turns were answered" in result.reasons


def test_the_fallback_rules_answering_is_no_pass():
    complaint = case(expect="complaint", facts=())
    text = (
        "Sorry, our assistant can't answer right now. A member of our team will get back "
        "to you here as soon as possible."
    )
    result = score(complaint, text, fallback=True, finish_reason="timeout", model_failed=True)
    assert not result.passed and "no model answer (timeout)" in result.reasons[0]
    # Not the model's words: neither measured for language nor taken as an offer of a human.
    assert result.answers == [None] and not result.offers_human and not result.apologises


def test_a_hand_off_instead_of_an_answer_fails():
    result = scoring.score_case(case(), [Answer(question="q", outcome=HANDOFF)])
    assert not result.passed and "did not answer" in result.reasons[0]


def test_guards_fired_come_from_bot_done_and_from_a_guards_finish_reason():
    assert Answer(question="q", guards=["complaint"], finish_reason="stop").guards_fired == [
        "complaint"
    ]
    assert Answer(question="q", finish_reason="repetition").guards_fired == ["repetition"]
    assert Answer(question="q", finish_reason="length").guards_fired == []
    assert (
        Answer(question="q", finish_reason="timeout", fallback=True, model_failed=True).guards_fired
        == []
    )
