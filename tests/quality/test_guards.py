"""The product's guards (chat/guards.py, inference_worker/textguards.py): what a customer reads
whatever the model does. Each pipeline test scripts the synthetic token source to misbehave as
small models do (loop, run on, answer in the wrong language, repeat the question) and goes
through the real answer path: the chat API, the answer run, the channel layer and an in-process
worker. Without its guard, each of them fails: the customer would read the misbehaviour."""

import random

import pytest

from chat import fallback, guards
from chat.models import BotProfile, Message
from chat.prompting import DEFAULT_PROFILE_NAME, DEFAULT_SYSTEM_PROMPT
from inference_worker import textguards
from tests.api.helpers import chat, make_client, parse_sse, read_stream

pytestmark = pytest.mark.django_db(transaction=True)

# --- the text guards, alone -------------------------------------------------------------------


def test_a_loop_is_found_where_it_begins_and_numbers_do_not_hide_it():
    said_once = "The Zephyr-9 has a 27-month warranty. "
    loop = "The Zephyr-8 has a 2-year warranty. The Zephyr-10 has a 3-year warranty. "
    text = said_once + loop * 3
    start = textguards.loop_start(text)
    assert start is not None
    # Numbers are one symbol: the Zephyr-8 and Zephyr-10 sentences are one said again and
    # again, and it ends the same way as the sentence before them ("… warranty."), so the
    # loop reaches back to there: what is kept is what was said before it.
    assert textguards.cut_at_sentence(text[:start]) == said_once.strip()


def test_lists_of_like_things_are_not_loops():
    english = (
        "- Netherlands, Belgium, Germany: 1–2 business days\n"
        "- Rest of the European Union: 2–4 business days\n"
        "- United Kingdom, Switzerland, Norway: 3–6 business days\n"
        "- Rest of the world: 5–12 business days"
    )
    chinese = (
        "- 荷兰、比利时、德国：1–2 个工作日\n- 欧盟其他国家：2–4 个工作日\n"
        "- 英国、瑞士、挪威：3–6 个工作日（需要清关）\n- 中国大陆及世界其他地区：5–12 个工作日"
    )
    assert textguards.loop_start(english) is None
    assert textguards.loop_start(chinese) is None


def test_a_loop_is_found_whatever_its_rounds_begin_with():
    """Caught in its fourth round at the latest (its third, if a delta ends just as the third
    does), however the stream's deltas cut it."""
    text = (
        "In Germany, a parcel is delivered in 12.5 days (24 hours). Here is the breakdown:"
        + " - 12.5 days (24 hours) = 3.2 hours" * 4
        + " So"
    )
    for step in (1, 3, 7):
        guard = textguards.StreamGuard(loops=True, limit=None)
        stopped = next(
            (i for i in range(0, len(text), step) if guard.feed(text[i : i + step])), None
        )
        assert stopped is not None and stopped < len(text) - 3
        assert guard.kept() == "In Germany, a parcel is delivered in 12.5 days (24 hours)."


def test_a_chinese_loop_is_found():
    text = "您好，工作日15:00前的订单当天发货。" + "如果你的订单发通识或者没有订单时候发货，" * 4
    start = textguards.loop_start(text)
    assert start is not None
    assert textguards.cut_at_sentence(text[:start]) == "您好，工作日15:00前的订单当天发货。"


@pytest.mark.parametrize(
    ("text", "cut"),
    [
        (
            "We ship from Rotterdam. Delivery to Germany takes 1–2 days and costs nothi",
            "We ship from Rotterdam.",
        ),
        (
            "Delivery to Germany takes one to two business days and the cost is fre",
            "Delivery to Germany takes one to two business days and the cost is…",
        ),
        ("我们从鹿特丹发货。德国1–2个工作日送达，运费满50欧元免", "我们从鹿特丹发货。"),
        ("- first step\n- second step\n- thi", "- first step\n- second step"),
    ],
)
def test_a_cut_ends_at_a_sentence_never_mid_word(text, cut):
    assert textguards.cut_at_sentence(text) == cut


def test_the_answer_limit_counts_words_and_chinese_characters_apart():
    limit = textguards.AnswerLimit(words=5, han=6)
    assert not limit.exceeded_by("one two three four five 一二三四五六")
    assert limit.exceeded_by("one two three four five six")
    assert limit.exceeded_by("一二三四五六七")
    assert limit.fit("one two three four five six seven") == "one two three four five"


@pytest.mark.parametrize(
    ("answer", "language", "wrong"),
    [
        ("We accept PayPal and Visa for every order.", "zh-CN", True),
        ("我们接受 PayPal、Visa 和 Mastercard 付款。", "zh-CN", False),
        ("我们接受 PayPal 付款，也接受银行转账。", "en", True),
        ("您好, thanks!", "en", False),  # too short to judge
        ("Orders to 中国 take 5–12 business days.", "en", False),
        ("12345", "zh-CN", False),
    ],
)
def test_the_language_check_judges_the_script_not_a_brand_name(answer, language, wrong):
    assert guards.wrong_language(answer, language) is wrong


@pytest.mark.parametrize(
    ("question", "answer", "echo"),
    [
        ("我的订单什么时候发货？", "我的订单什么时候发货？", True),
        ("我的订单什么时候发货？", "您好！我的订单什么时候发货？", True),
        ("收到的台灯能直接换成别的款式吗？", "能直接换成别的款式。", True),
        ("寄到德国一般要几天？", "寄到德国一般要1-2个工作日。", False),
        ("What payment methods do you accept?", "What payment methods do you accept", True),
        (
            "What payment methods do you accept?",
            "We accept Visa, Mastercard, PayPal and Klarna.",
            False,
        ),
        (
            "What payment methods do you accept?",
            "Your question: what payment methods do you "
            "accept? We accept Visa, Mastercard, PayPal and Klarna.",
            False,
        ),
        # A yes or a no restating the question answers it.
        (
            "Can I pay in cash when the parcel arrives?",
            "No, you cannot pay in cash when the parcel arrives.",
            False,
        ),
        ("Can I pay with PayPal?", "Yes, you can.", False),
        ("可以货到付款吗？", "不可以货到付款。", False),
        # Short, but not the question.
        ("hi", "Hello!", False),
        ("hi", "您好,thanks!", False),
    ],
)
def test_an_echo_is_an_answer_that_adds_nothing_to_the_question(question, answer, echo):
    assert guards.is_echo(answer, question) is echo


@pytest.mark.parametrize(
    ("question", "complaint"),
    [
        ("This is unacceptable, my parcel is two weeks late!", True),
        ("The kettle arrived broken and nobody answers my emails.", True),
        ("你们的服务太差了，我要投诉！", True),
        ("包裹到了，东西坏了", True),
        ("How long does delivery to Germany take?", False),
        ("Is an unbroken seal needed for returns?", False),
        ("退货运费谁出？", False),
    ],
)
def test_complaints_are_told_apart_from_questions(question, complaint):
    assert guards.is_complaint(question) is complaint


@pytest.mark.parametrize(
    ("question", "needs"),
    [
        ("Where is my order?", True),
        ("Can I cancel my order?", True),
        ("我的订单到哪了？", True),
        ("Where is my order 12345678?", False),
        ("My order is 1234.", False),
        ("Where is my order A1001?", False),
        ("My order #AB-77 has not arrived", False),
        ("My order no. 123 is late", False),
        ("我的订单1234到哪了？", False),
        ("我的订单A1001到哪了？", False),
        ("I placed my order 3 weeks ago, where is it?", True),
        ("My order from 12.5 days ago is late", True),
        ("Status of my order, I ordered with zoe@example.com", False),
        ("How long does delivery to Germany take?", False),
    ],
)
def test_questions_about_ones_own_order_need_its_number(question, needs):
    assert guards.needs_order_details(question) is needs


@pytest.mark.parametrize("text", ["Hello!", "hi there", "您好", "谢谢！", "Thank you so much"])
def test_greetings_are_recognised(text):
    assert guards.is_greeting(text)


def test_a_question_is_not_a_greeting():
    assert not guards.is_greeting("Hello, where is my parcel?")


# --- through the answer path -------------------------------------------------------------------


def last_user_message(prompt: str) -> str:
    return prompt.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


async def ask(engine, question, *, language="en", session="s"):
    api = await make_client()
    response = await chat(api, session_id=session, user_input=question, language=language)
    assert response.status_code == 200, response.content
    body = response.json()
    stored = await Message.objects.aget(pk=body["message_id"])
    assert stored.text == body["response"]  # the transcript holds what the customer read
    return body, stored


async def test_a_loop_is_stopped_in_the_engine_and_cut_back(worker, engine):
    said_once = "Our warehouse is in Rotterdam. "
    loop = "The Zephyr-8 has a 2-year warranty. The Zephyr-10 has a 3-year warranty. "
    engine.reply = lambda prompt: said_once + loop * 4
    body, stored = await ask(engine, "Which kettles have a warranty?")
    assert body["response"] == said_once.strip()
    assert body["finish_reason"] == "repetition" and body["guards"] == ["repetition"]
    assert body["partial"] is False
    assert engine.aborted  # the engine stopped generating at once
    assert stored.guards == "repetition"


async def test_an_answer_that_runs_on_ends_at_a_sentence_within_the_limit(worker, engine):
    rng = random.Random(7)
    vocabulary = (
        "parcel warehouse carrier invoice refund label courier address locker "
        "customs weekend express tracking schedule payment voucher kettle lamp "
        "speaker charger blanket curtain pillow mattress"
    ).split()
    engine.reply = lambda prompt: " ".join(
        " ".join(rng.choice(vocabulary) for _ in range(9)).capitalize() + "." for _ in range(13)
    )  # 117 words, no stretch of them said three times
    # The synthetic source's tokens are characters: room for the whole text.
    await BotProfile.objects.aupdate_or_create(
        is_default=True,
        defaults={
            "name": DEFAULT_PROFILE_NAME,
            "system_prompt": DEFAULT_SYSTEM_PROMPT,
            "max_tokens": 1100,
        },
    )
    body, stored = await ask(engine, "How fast do you ship?")
    words = len(body["response"].split())
    assert 80 < words <= 100
    assert body["response"].endswith(".")
    assert body["finish_reason"] == "length" and body["guards"] == ["length"]
    assert engine.aborted


async def test_a_stream_is_told_to_replace_what_a_guard_cut(worker, engine):
    loop = "Zephyr-8 has a 2-year warranty. Zephyr-10 has a 3-year warranty. "
    engine.reply = lambda prompt: loop * 4
    api = await make_client()
    response = await chat(api, session_id="s", user_input="Which kettles?", stream=True)
    events = parse_sse(await read_stream(response))
    starts = [frame for name, frame in events if name == "bot.start"]
    assert [start.get("replace", False) for start in starts] == [False, True]
    after = [
        frame["text"]
        for name, frame in events[events.index(("bot.start", starts[1])) :]
        if name == "bot.delta"
    ]
    assert "".join(after) == "Zephyr-8 has a 2-year warranty."


async def test_an_answer_in_the_wrong_language_is_asked_again_with_the_rule_restated(
    worker, engine
):
    def reply(prompt):
        if "只用" in prompt:
            return "我们支持 Visa、Mastercard 和 PayPal 付款。"
        return "We accept Visa, Mastercard and PayPal."

    engine.reply = reply
    body, stored = await ask(engine, "你们支持哪些付款方式？", language="zh-CN")
    assert body["response"] == "我们支持 Visa、Mastercard 和 PayPal 付款。"
    assert body["guards"] == ["language"] and body["fallback"] is False
    first, second = engine.prompts.values()
    assert "只用" not in first and "只用" in second
    assert stored.prompt[0]["content"].endswith("只用Simplified Chinese回答。")


async def test_an_answer_wrong_twice_is_replaced_by_the_localised_fallback(worker, engine):
    engine.reply = lambda prompt: "We accept Visa, Mastercard and PayPal."
    body, stored = await ask(engine, "你们支持哪些付款方式？", language="zh-CN")
    assert body["response"] == fallback.choose_answer([], text="", language="zh-CN")
    assert body["fallback"] is True and body["finish_reason"] == "language"
    assert body["guards"] == ["language", "language"]
    assert len(engine.prompts) == 2 and stored.is_fallback


async def test_an_answer_that_only_repeats_the_question_is_asked_again(worker, engine):
    def reply(prompt):
        if "repeat the customer's question" in prompt:
            return "Standard shipping is free for orders over 50 euros."
        return last_user_message(prompt)

    engine.reply = reply
    body, _ = await ask(engine, "Is shipping free for big orders?")
    assert body["response"] == "Standard shipping is free for orders over 50 euros."
    assert body["guards"] == ["echo"] and len(engine.prompts) == 2


async def test_a_complaint_gets_an_apology_first_and_the_offer_of_a_human_last(worker, engine):
    engine.reply = lambda prompt: "Parcels usually arrive within 2–4 business days."
    body, stored = await ask(engine, "This is unacceptable, the parcel is two weeks late!")
    response = body["response"]
    assert response.startswith(guards.text("apology", "en"))
    assert response.endswith(guards.text("offer_human", "en"))
    assert "Parcels usually arrive within 2–4 business days." in response
    assert body["offer_human"] is True and "complaint" in body["guards"]
    assert "complaint" in stored.guards.split(",")


async def test_a_chinese_complaint_is_answered_in_chinese_words_without_spaces(worker, engine):
    engine.reply = lambda prompt: "包裹一般在2–4个工作日内送达。"
    body, _ = await ask(engine, "你们的服务太差了，包裹还没到！", language="zh-CN")
    assert body["response"] == (
        guards.text("apology", "zh")
        + "包裹一般在2–4个工作日内送达。"
        + guards.text("offer_human", "zh")
    )


async def test_a_question_about_an_order_ends_by_asking_for_its_number(worker, engine):
    engine.reply = lambda prompt: "You can follow your parcel in your account under Orders."
    body, _ = await ask(engine, "Where is my order?")
    assert body["response"].endswith(guards.text(guards.ASK_DETAILS, "en"))
    assert body["guards"] == ["ask_details"]

    engine.reply = lambda prompt: "Please send me your order number and I will check."
    body, _ = await ask(engine, "Where is my order?", session="t")
    assert body["response"] == "Please send me your order number and I will check."
    assert body["guards"] == []


async def test_guards_are_counted(worker, engine):
    from prometheus_client import REGISTRY

    def count(guard):
        return REGISTRY.get_sample_value("cs_chat_guards_total", {"guard": guard}) or 0

    before = count("complaint")
    engine.reply = lambda prompt: "We are looking into it."
    await ask(engine, "Terrible service, I am very disappointed.")
    assert count("complaint") == before + 1


@pytest.mark.django_db(transaction=False)
def test_a_new_installations_profile_says_so_and_offers_a_human():
    """Migrations make the shipped profile: today's prompt, the penalty against loops, and
    "say so and offer a human" when no article covers a question."""
    profile = BotProfile.objects.get(is_default=True)
    assert profile.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert profile.when_no_knowledge == BotProfile.WhenNoKnowledge.OFFER_HUMAN
    assert (profile.frequency_penalty, profile.max_tokens) == (0.3, 320)
    assert (profile.answer_max_words, profile.answer_max_han) == (100, 150)


# --- figures, greetings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "told", "unsupported"),
    [
        # A range is one figure: "2" alone is not what "1–2" says.
        ("Delivery takes approximately 2 business days.", "Germany: 1–2 business days", ["2"]),
        ("Delivery takes 1-2 business days and costs €4,95.", "1–2 business days, €4.95", []),
        ("It takes 3 to 6 business days.", "UK: 3–6 business days", []),
        # Number words before a unit are figures too, in both languages.
        ("The warranty period is three years.", "the statutory two-year EU warranty", ["3"]),
        ("within five business days", "within 5 business days", []),
        ("Acorn Home 的音箱保修两年。", "Acorn Home 享受三年延长保修", ["2"]),
        ("寄到中国大陆需要3-6个工作日。", "中国大陆：5–12 个工作日", ["3-6"]),
        # A date is one figure (and states its month and day); an order number is a name.
        (
            "您的订单A1001已于2026-12-04发货，预计12-07送达。",
            "Order A1001: shipped on 2026-12-04, expected on 2026-12-07",
            [],
        ),
        ("Order A1001 arrives on 2026-12-09.", "A1001: expected on 2026-12-07", ["2026-12-09"]),
        # Numbered steps count steps; they state no figure.
        ("1. Sign in\n2. Choose the item\n3. Drop it within 14 days", "within 14 days", []),
    ],
)
def test_a_figure_the_model_was_not_given_is_found(answer, told, unsupported):
    assert guards.unsupported_figures(answer, told) == unsupported


@pytest.mark.parametrize(
    ("message", "language", "reply"),
    [
        ("Hey there, is anyone around?", "en", "greeting"),
        ("在吗？", "zh-CN", "greeting"),
        ("Thanks a lot!", "en", "thanks"),
        ("谢谢", "zh-CN", "thanks"),
        ("Hello, where is my parcel?", "en", None),
    ],
)
def test_greetings_and_thanks_get_the_products_reply(message, language, reply):
    expected = None if reply is None else guards.text(reply, language)
    assert guards.greeting_reply(message, language) == expected


# --- with the sample help centre ---------------------------------------------------------------


@pytest.fixture
async def sample():
    import io

    from asgiref.sync import sync_to_async
    from django.core.management import call_command

    await sync_to_async(call_command)("import_knowledge", "--sample", stdout=io.StringIO())


async def test_a_figure_the_passages_do_not_state_is_replaced_by_their_own_words(
    sample, worker, engine
):
    engine.reply = lambda prompt: "Delivery to Germany takes approximately 2 business days."
    body, stored = await ask(engine, "How long does delivery take to Germany?")
    assert "Germany: 1–2 business days" in body["response"]
    assert "approximately 2" not in body["response"]
    assert body["guards"] == ["figures", "quoted"] and body["finish_reason"] == "quoted"
    assert body["fallback"] is False and len(engine.prompts) == 1  # not asked again
    assert stored.guards == "figures,quoted" and not stored.is_fallback

    # The figures it was given pass: the model's own words stay.
    engine.reply = lambda prompt: "Delivery to Germany takes 1-2 business days."
    body, _ = await ask(engine, "How long does delivery take to Germany?", session="t")
    assert body["response"] == "Delivery to Germany takes 1-2 business days."
    assert body["guards"] == [] and body["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("question", "yes_no"),
    [
        ("Can you deliver to a PO box?", True),
        ("I'd like to return a gift card I bought. Is that possible?", True),  # the second
        ("Hello, where is my parcel?", False),
        ("I bought a lamp. How long is its warranty?", False),
        ("礼品卡买了。能退吗？", True),
    ],
)
def test_a_yes_or_no_question_is_told_by_any_of_its_sentences(question, yes_no):
    assert guards.is_yes_no_question(question) is yes_no


async def test_a_yes_against_a_line_that_says_no_is_replaced_by_the_lines(sample, worker, engine):
    # The question's yes/no is its second sentence; the line that says no is a list item
    # under "Items that cannot be returned".
    engine.reply = lambda prompt: "Yes, it is possible to return a gift card you bought."
    body, _ = await ask(engine, "I'd like to return a gift card I bought. Is that possible?")
    assert body["guards"] == ["polarity", "quoted"] and body["finish_reason"] == "quoted"
    assert "Items that cannot be returned" in body["response"]
    assert "it is possible" not in body["response"]


async def test_a_yes_to_what_no_passage_names_is_replaced_by_the_lines(sample, worker, engine):
    # The payment page lists the methods it takes; Bitcoin is not one of them, and no line
    # says no to it in so many words.
    engine.reply = lambda prompt: "Yes, you can pay with Bitcoin."
    body, _ = await ask(engine, "Can I pay with Bitcoin?")
    assert body["guards"] == ["polarity", "quoted"]
    assert "Bitcoin" not in body["response"]
    assert "Accepted payment methods" in body["response"]
    # A yes to what the passages name stays.
    engine.reply = lambda prompt: "Yes, you can pay with PayPal."
    body, _ = await ask(engine, "Can I pay with PayPal?", session="p")
    assert body["guards"] == [] and body["response"] == "Yes, you can pay with PayPal."


@pytest.mark.parametrize(
    ("answer", "results", "missed"),
    [
        ("It shipped and arrives on 2030-01-02.", ["Order A1001: shipped, due 2030-01-02"], False),
        ("预计1月2日送达。", ["订单 A1001：已发货，预计 2030-01-02 送达。"], False),
        ("It arrives on 2031-05-05.", ["Order A1001: shipped, due 2030-01-02"], True),
        ("I don't know where your order is.", ["Order A1001: shipped, due 2030-01-02"], True),
        ("It has not shipped yet.", ["Order A1001: shipped, due 2030-01-02"], True),
        ("It is still being prepared.", ["Order A1001: being prepared in our warehouse"], False),
        ("Your order A1001 is on its way.", ["Order A1001: being prepared in our warehouse"], True),
        ("It has not shipped yet.", ["Order A1001: it has not shipped yet"], False),
    ],
)
def test_an_answer_from_a_look_up_must_say_what_it_found(answer, results, missed):
    asked = "Where is my order A1001?"
    assert guards.misses_the_result(answer, results, asked=asked) is missed


@pytest.mark.parametrize(
    ("answer", "question", "passages", "unnamed"),
    [
        ("Yes, you can pay with Bitcoin.", "Can I pay with Bitcoin?", "We take PayPal.", True),
        ("No, we only take PayPal.", "Can I pay with Bitcoin?", "We take PayPal.", False),
        ("Yes, lamps ship to Norway.", "Do lamps ship to Norway?", "Lamps ship to Norway.", False),
        ("It takes 3 days.", "How long to Bitcoinland?", "Norway: 3-6 days", False),
        ("Yes, you can pay with Bitcoin here.", "Can I pay with Bitcoin?", "Bitcoin: no.", False),
        ("可以用 PayPal 付款。", "可以用 PayPal 付款吗？", "我们接受 PayPal 付款。", False),
        # Everyday words the pages say otherwise are no names: "fix" for "change".
        ("Yes, you can still fix it.", "Can I still fix my address?", "Change it.", False),
    ],
)
def test_a_yes_is_the_models_own_when_no_passage_names_what_it_affirms(
    answer, question, passages, unnamed
):
    found = guards.yes_to_the_unnamed(answer, question=question, passages=passages)
    assert bool(found) is unnamed


async def test_a_yes_against_any_line_as_good_as_the_best_one_is_replaced(sample, worker, engine):
    # No line names Spain: the one on orders outside the EU and the one saying orders within
    # it never pay duties answer the question as well as each other.
    engine.reply = lambda prompt: "Yes, you will have to pay import duties on that order."
    body, _ = await ask(engine, "Will I have to pay import duties on an order shipped to Spain?")
    assert body["guards"] == ["polarity", "quoted"]
    assert "Orders within the EU never pay customs duties" in body["response"]
    # A no is left alone.
    engine.reply = lambda prompt: "No, orders within the EU do not pay import duties."
    body, _ = await ask(
        engine, "Will I have to pay import duties on an order shipped to Spain?", session="n"
    )
    assert body["guards"] == [] and body["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("answer", "made_up"),
    [
        (
            "We work with several delivery companies, including FedEx, UPS, and Amazon.",
            ["Amazon", "FedEx"],
        ),
        ("We ship with DHL or UPS; Acorn Home lamps have three years.", []),
        ("PayPal is charged at once. I can help with more.", []),  # a sentence's first word
        ("You can pay with American Express or Apple Pay.", ["Apple Pay"]),
        ("我们使用 FedEx 和 DHL 配送。", ["FedEx"]),
        ("我们使用 DHL 配送。", []),
        ("1–2.", []),  # no letters at all: no script to judge names by, and no names
        ("", []),
    ],
)
def test_a_name_the_model_was_not_given_is_found(answer, made_up):
    told = "We ship with PostNL, DHL or UPS. Acorn Home lamps. Visa, American Express, PayPal."
    assert guards.unsupported_names(answer, told) == made_up


async def test_a_carrier_the_help_centre_does_not_name_is_replaced_by_its_lines(
    sample, worker, engine
):
    question = "How can I track my parcel, and with which carrier?"
    engine.reply = lambda prompt: "We work with FedEx and UPS."
    body, stored = await ask(engine, question)
    assert body["guards"] == ["names", "quoted"] and body["finish_reason"] == "quoted"
    assert "FedEx" not in body["response"] and "DHL" in body["response"]
    assert stored.guards == "names,quoted"
    # The carriers the help centre names pass: the model's own words stay.
    engine.reply = lambda prompt: "We work with PostNL, DHL and UPS."
    body, _ = await ask(engine, question, session="ok")
    # (A question about "my parcel" without its number gets the request for it after.)
    assert body["guards"] == ["ask_details"]
    assert body["response"].startswith("We work with PostNL, DHL and UPS.")


async def test_an_answer_of_figures_alone_is_the_models_answer(sample, worker, engine):
    """No letters in it: the guards judge it like any answer (before, the names guard failed
    on it, and the customer got the text cut off and the fallback after it)."""
    engine.reply = lambda prompt: "1–2"
    body, stored = await ask(engine, "How long does delivery take to Germany?")
    assert body["fallback"] is False and body["response"].startswith("1–2")
    bot_messages = Message.objects.filter(conversation_id=stored.conversation_id, role="bot")
    assert await bot_messages.acount() == 1  # the answer, and no fallback after it


async def test_an_answer_wrong_twice_with_passages_becomes_their_own_words(sample, worker, engine):
    engine.reply = lambda prompt: last_user_message(prompt).split("\n\n")[0]  # an echo
    body, _ = await ask(engine, "寄到德国一般要几天？", language="zh-CN")
    assert "德国：1–2 个工作日" in body["response"]
    assert body["guards"] == ["echo", "echo", "quoted"] and body["fallback"] is False
    assert len(engine.prompts) == 2


async def test_the_model_is_given_the_lines_that_answer_rather_than_whole_passages(
    sample, worker, engine
):
    engine.reply = lambda prompt: "1-2 business days."
    await ask(engine, "How long does delivery take to Germany?")
    (prompt,) = engine.prompts.values()
    assert (
        "[1] Shipping and delivery > Delivery times\n"
        "Netherlands, Belgium, Germany: 1–2 business days"
    ) in prompt
    assert "Orders placed before 15:00" not in prompt  # the rest of the passage


async def test_with_whole_passages_the_best_lines_are_named_after_the_rule(
    sample, worker, engine, settings
):
    settings.KNOWLEDGE = {**settings.KNOWLEDGE, "PROMPT_LINES_ONLY": False}
    engine.reply = lambda prompt: "1-2 business days."
    await ask(engine, "How long does delivery take to Germany?")
    (prompt,) = engine.prompts.values()
    assert (
        "The lines that answer it best: \u201cNetherlands, Belgium, Germany: 1–2 business days"
    ) in prompt
    assert "ships every order from our warehouse in Rotterdam" in prompt  # a whole passage


async def test_a_greeting_gets_the_products_reply_without_the_model(sample, worker, engine):
    body, stored = await ask(engine, "Hi there!")
    assert body["response"] == guards.text("greeting", "en")
    assert body["guards"] == ["greeting"] and body["finish_reason"] == "greeting"
    assert engine.prompts == {}
    body, _ = await ask(engine, "谢谢！", language="zh-CN", session="t")
    assert body["response"] == guards.text("thanks", "zh-CN")


async def test_an_order_question_nothing_covers_asks_for_the_order_number(sample, worker, engine):
    await BotProfile.objects.aupdate_or_create(
        is_default=True,
        defaults={
            "name": DEFAULT_PROFILE_NAME,
            "system_prompt": DEFAULT_SYSTEM_PROMPT,
            "when_no_knowledge": BotProfile.WhenNoKnowledge.OFFER_HUMAN,
        },
    )
    body, _ = await ask(engine, "Can you check whether my refund has been processed?")
    assert body["response"] == guards.text(guards.ASK_DETAILS, "en")
    assert body["guards"] == ["ask_details"] and body["offer_human"] is True
    assert engine.prompts == {}


@pytest.mark.parametrize(
    ("answer", "lines", "question", "off"),
    [
        # Figures from another line of the passages: the refunds' 5 days for the return window.
        (
            "收到货后 5 个工作日内可以退。",
            ["自签收之日起 30 天内可以申请退货。", "退款 5 个工作日"],
            "收到货以后多少天之内可以退？",
            True,
        ),
        # Figures of the best line win over those of the next one.
        (
            "我们的商品保修是三年。",
            ["所有商品享受两年欧盟法定保修。", "Acorn Home 的电子产品享受三年延长保修。"],
            "你们的商品保修多长时间？",
            True,
        ),
        (
            "You have 30 days to return an item.",
            ["You have 30 days from the day of delivery."],
            "How many days do I have to send something back?",
            False,
        ),
        # No figure where the question asks for one and the lines have it.
        (
            "寄往中国大陆需要多长时间，由收件人在签收时支付。",
            ["中国大陆及世界其他地区：5–12 个工作日"],
            "寄到中国大陆需要多长时间？",
            True,
        ),
        (
            "No, we do not deliver to PO boxes.",
            ["We deliver to parcel lockers, but not to PO boxes."],
            "Can you deliver to a PO box?",
            False,
        ),
        # The customer's own figures are theirs to repeat.
        (
            "For an order of 60 euros shipping is free.",
            ["Standard shipping is free for orders over €50."],
            "If my order comes to 60 euros, do I pay for shipping?",
            False,
        ),
    ],
)
def test_figures_off_the_lines_that_answer_are_found(answer, lines, question, off):
    assert guards.figures_off_the_lines(answer, lines, question=question, asked=question) is off


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        (
            "Our products are covered. Here is how long it lasts and what is covered. Returns are "
            "free. Here is how long it lasts and what is covered.",
            "Our products are covered. Here is how long it lasts and what is covered. Returns are free.",
        ),
        (
            "保修期是两年，从签收之日起计算。保修期是两年，从签收之日起计算。",
            "保修期是两年，从签收之日起计算。",
        ),
        ("Thank you. Thank you.", None),  # short sentences may recur
    ],
)
def test_a_sentence_said_twice_is_cut_where_it_begins_again(answer, kept):
    cut = guards.repeated_from(answer)
    assert (None if cut is None else answer[:cut].rstrip()) == kept


async def test_an_answer_reciting_its_passages_is_cut_where_the_recital_begins(
    sample, worker, engine
):
    def reply(prompt):
        recited = prompt.split("\n[1] ", 1)[1].split("\n", 1)[0]  # "[1] Title > Heading"
        return f"All products have a two-year warranty. [1] {recited} All products have"

    engine.reply = reply
    body, _ = await ask(engine, "How long are your products under warranty?")
    assert body["response"] == "All products have a two-year warranty."
    assert body["guards"] == ["repetition"]


async def test_the_products_closing_words_stay_within_the_answer_limit(worker, engine):
    """The question for the order number (22 words) comes after the model's last word: the
    model's text is cut back to a sentence so that the whole answer keeps to the limit."""
    await BotProfile.objects.aupdate_or_create(
        is_default=True,
        defaults={
            "name": DEFAULT_PROFILE_NAME,
            "system_prompt": DEFAULT_SYSTEM_PROMPT,
            "answer_max_words": 40,
        },
    )
    first = "Your parcel is handled by our warehouse team in Rotterdam today."
    second = "Parcels usually leave the warehouse within one business day of the order."
    engine.reply = lambda prompt: f"{first} {second} It leaves soon."  # 26 words: within 40
    body, _ = await ask(engine, "Where is my order?")
    response = body["response"]
    assert len(response.split()) <= 40
    assert response == first + " " + guards.text(guards.ASK_DETAILS, "en")
    assert body["guards"] == ["ask_details", "length"]
