"""Every guard takes any text a model may write, without failing: a guard that raises ends the
answer run, and the customer gets the answer cut off and the fallback after it. Text here is
made of pieces small models produce (figures alone, punctuation, Chinese, brand names, markup,
nothing at all), combined by Hypothesis, with a fixed seed so a run is repeatable."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import guards
from inference_worker.textguards import AnswerLimit, StreamGuard

PIECES = [
    *("the", "order", "you", "can", "Yes,", "no", "We", "I", "return", "free", "shipping"),
    *("Germany", "DHL", "FedEx", "PayPal", "Sorry", "human", "agent", "days", "within"),
    *("1234", "A1001", "#AB-77", "€", "$20", "10%", "3-5", "1–2", "30", "15:00", "2024-05-01"),
    *(".", ",", "!", "?", "…", ":", ";", "-", "(", ")", "**", "#", "\n", "\n\n", " ", ""),
    *("你好", "订单", "是的", "不", "德国", "。", "，", "！", "？", "个工作日", "人工客服"),
]
TEXT = st.lists(st.sampled_from(PIECES), max_size=40).map(" ".join) | st.lists(
    st.sampled_from(PIECES), max_size=40
).map("".join)
LANGUAGES = st.sampled_from(["en", "zh-CN", "de", "fr", "ja", ""])
SETTINGS = settings(
    max_examples=400, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)


@SETTINGS
@given(answer=TEXT, question=TEXT, passages=TEXT, language=LANGUAGES)
def test_the_answer_guards_take_any_text(answer, question, passages, language):
    guards.wrong_language(answer, language)
    guards.is_echo(answer, question)
    guards.repeated_from(answer)
    guards.unsupported_figures(answer, passages)
    guards.unsupported_names(answer, passages)
    guards.figures_off_the_lines(answer, [passages], question=question, asked=question)
    guards.yes_to_the_unnamed(answer, question=question, passages=passages)
    guards.says_yes_against(answer, passages, question=question)
    guards.misses_the_result(answer, [passages], asked=question)
    guards.asks_for_details(answer)
    guards.offers_human(answer)


@SETTINGS
@given(question=TEXT, language=LANGUAGES)
def test_the_question_guards_take_any_text(question, language):
    guards.greeting_reply(question, language or "en")
    guards.is_complaint(question)
    guards.needs_order_details(question)
    guards.is_yes_no_question(question)
    guards.asks_for_figure(question)


@SETTINGS
@given(
    chunks=st.lists(TEXT, min_size=1, max_size=30),
    words=st.integers(0, 50),
    han=st.integers(0, 80),
    loops=st.booleans(),
    finish_reason=st.sampled_from([None, "stop", "length"]),
)
def test_the_stream_guard_takes_any_text(chunks, words, han, loops, finish_reason):
    limit = AnswerLimit(words=words or 10**9, han=han or 10**9) if words or han else None
    guard = StreamGuard(loops=loops, limit=limit)
    for chunk in chunks:
        if guard.feed(chunk) is not None:
            break
    guard.finished(finish_reason)
