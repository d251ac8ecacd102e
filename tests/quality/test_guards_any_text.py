"""Every guard takes any text a model may write, without failing: a guard that raises ends the
answer run, and the customer gets the answer cut off and the fallback after it. Text here is
made of pieces small models produce (figures alone, punctuation, Chinese, brand names, markup,
nothing at all), combined by Hypothesis, with a fixed seed so a run is repeatable."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import guards
from inference_worker import textguards
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


# Long answers, some ending in a loop of a stretch of any length (up to past the longest a
# loop may have), with runs of digits and spaces that a window may cut.
LONG = st.builds(
    lambda head, stretch, rounds, tail: head + stretch * rounds + tail,
    st.lists(
        st.sampled_from([*PIECES, "1234567890" * 30, " " * 300]), min_size=150, max_size=400
    ).map(" ".join),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=60).map(" ".join),
    st.integers(0, 12),
    st.sampled_from(["", " So", "。", " 1234"]),
)


@SETTINGS
@given(text=LONG)
def test_a_loop_is_judged_on_the_end_of_the_text_as_on_all_of_it(text):
    assert textguards.loop_start(text) == textguards._loop_start(text)


@SETTINGS
@given(chunks=st.lists(TEXT, min_size=1, max_size=30), words=st.integers(1, 60))
def test_the_stream_guard_counts_an_answer_as_a_whole_text_is_counted(chunks, words):
    limit = AnswerLimit(words=words, han=words)
    guard = StreamGuard(loops=False, limit=limit)
    for chunk in chunks:
        reason = guard.feed(chunk)
        assert (reason == StreamGuard.LENGTH) == limit.exceeded_by(guard.text)
        if reason is not None:
            break
