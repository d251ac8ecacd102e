"""Part 2's page from its measurements: the serving CPU per token beside the ratios."""

import dataclasses

from bench import report, vs_vllm


def rounds(tokens: int) -> list[list[vs_vllm.Answer]]:
    return [
        [vs_vllm.Answer("q", sent=0.0, first_token=0.1, done=2.0, tokens=tokens, text="a")]
        for _ in range(2)
    ]


def test_the_page_shows_each_sides_serving_cpu_per_token():
    plan = vs_vllm.Plan(concurrency=(1, 16), rounds=2)
    results = vs_vllm.Results(
        plan,
        system_prompt_tokens={"ours": [30], "theirs": [30]},
        answers={(c, side): rounds(100) for c in (1, 16) for side in ("ours", "theirs")},
        same_text={1: (2, 2), 16: (2, 2)},
        others_cpu=0.0,
        model="m",
        engine_env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"},
        cores=2,
        # ours: 0.9 s over 400 tokens; theirs: 0.2 s over 400 tokens; none measured at 16
        serving_cpu={(1, "ours"): [0.9, 400], (1, "theirs"): [0.2, 400]},
        serving_parts={
            (1, "ours"): {"worker": 0.5, "Daphne": 0.3, "Redis": 0.1},
            (1, "theirs"): {"API server": 0.2},
        },
    )
    data = report._vllm_data(results)
    assert data["rows"]["1"]["serving_cpu_ms_per_token"] == {"ours": 2.25, "theirs": 0.5}
    assert data["rows"]["16"]["serving_cpu_ms_per_token"] == {}
    page = report.vllm_section({**data, "measured": "now"}, quick=False)
    assert data["rows"]["1"]["serving_cpu_parts"]["ours"] == (
        "worker 1.25 + Daphne 0.75 + Redis 0.25 ms"
    )
    assert "| 1 | 2.25 ms | worker 1.25 + Daphne 0.75 + Redis 0.25 ms | 0.50 ms |" in page
    assert "| 16 | " not in page.split("Serving CPU per token")[1].split("Targets")[0]
    assert "here compute threads on 1 of 2 cores, 1 kept free for the serving processes" in page


def test_the_page_says_whether_the_engines_left_the_serving_processes_a_core():
    assert report.engine_cores({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, 2) == (
        "compute threads on all 2 cores, shared with the serving processes"
    )
    # No reserved count: vLLM keeps its own one.
    assert report.engine_cores({}, 8).startswith("compute threads on 7 of 8 cores, 1 kept free")
    assert report.engine_cores({}, 0) == ""  # an older run's figures: nothing said


def test_no_tokens_is_no_figure():
    assert vs_vllm.ms_per_token(1.0, 0) is None
    assert vs_vllm.ms_per_token(0.5, 250) == 2.0
    assert vs_vllm.parts_per_token({"worker": 1.0}, 0) == "–"


def test_one_chat_may_have_rounds_of_its_own():
    plan = vs_vllm.Plan(concurrency=(1, 16), rounds=6, questions_in_a_row=1, one_chat_rounds=24)
    assert vs_vllm.rounds_at(plan, 1) == 24
    assert vs_vllm.rounds_at(plan, 16) == 6
    assert vs_vllm.rounds_at(vs_vllm.Plan(rounds=6), 1) == 6
    text = report._rounds_text(dataclasses.asdict(plan))
    assert text == "24 each at 1 chat and 6 at 16"
    assert report._rounds_text(dataclasses.asdict(vs_vllm.Plan(rounds=6))) == (
        "6 each per concurrency"
    )


def test_the_model_words_every_first_token_of_the_questions():
    # A greeting the desk answers itself, or a complaint it opens with its apology, would
    # time the product's words on our side against the model's on theirs.
    from chat import guards

    for question in vs_vllm.QUESTIONS:
        assert guards.greeting_reply(question, "en") is None, question
        assert not guards.is_complaint(question), question
