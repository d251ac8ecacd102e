"""`manage.py eval_answers` end to end: the command asks through the real answer path (the
sample help centre, the answer run, Redis, a worker on the synthetic token source scripted to
answer each question its own way) and reports and writes what the customer read.

The command runs its own event loop (asyncio.run), so it runs in a thread here while the worker
serves in the test's loop, with a channel layer of its own: one channels-redis layer cannot
receive in two event loops at once.
"""

import asyncio
import contextlib
import io
import json

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.core.management import CommandError, call_command

from inference_worker.synthetic import SyntheticEngine
from inference_worker.worker import InferenceWorker
from runtime.redis_client import get_redis

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = "Delivery to Germany takes 1–2 business days."
# Failures the product's guards leave alone, for the scorecard to find: a phrase said three
# times in sentences that differ, and a figure of the right line with the wrong unit.
LOOPING = "I can check that for you. Yes, I can check that now. Then I can check that again."
REPLIES = {
    "How long does delivery take to Germany?": GOOD,
    "Which payment methods do you accept?": LOOPING,
    "And to the United Kingdom?": "To the United Kingdom it takes 3–6 business days.",
    "寄到德国要几天？": "寄到德国需要1–2个星期。",  # a wrong fact: the help centre says 1–2 days
}
CASES = [
    {
        "id": "good-en",
        "category": "paraphrase",
        "language": "en",
        "turns": ["How long does delivery take to Germany?"],
        "expect": "answer",
        "facts": [["1–2 business days"]],
    },
    {
        "id": "loop-en",
        "category": "not_offered",
        "language": "en",
        "turns": ["Which payment methods do you accept?"],
        "expect": "answer",
        "facts": [["PayPal"]],
    },
    {
        "id": "follow-en",
        "category": "follow_up",
        "language": "en",
        "turns": ["How long does delivery take to Germany?", "And to the United Kingdom?"],
        "expect": "answer",
        "facts": [["3-6 business days"]],
    },
    {
        "id": "wrong-fact-zh",
        "category": "paraphrase",
        "language": "zh-CN",
        "turns": ["寄到德国要几天？"],
        "expect": "answer",
        "facts": [["1-2个工作日"]],
    },
]


def scripted(prompt: str) -> str:
    """The reply to the prompt's last customer message."""
    question = prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
    return REPLIES.get(question.strip(), "I am not sure.")


@pytest.fixture
async def scripted_worker():
    """A worker in this test's loop on the scripted synthetic source."""
    cfg = settings.INFERENCE
    engine = SyntheticEngine(reply=scripted, tokens_per_second=2000)
    worker = InferenceWorker(
        engine=engine,
        channel_layer=channel_layers.make_backend("default"),
        redis=get_redis(),
        channel=cfg["CHANNEL"],
        control_group=cfg["CONTROL_GROUP"],
        max_concurrency=4,
        coalesce_ms=cfg["COALESCE_MS"],
        heartbeat_seconds=0.5,
        name="scorecard-worker",
    )
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(ready=ready.set))
    await asyncio.wait_for(ready.wait(), 5)
    yield engine
    worker.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def eval_answers(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    await asyncio.to_thread(call_command, "eval_answers", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


async def test_the_report_and_the_json_count_what_the_customer_read(scripted_worker, tmp_path):
    await asyncio.to_thread(call_command, "import_knowledge", "--sample", stdout=io.StringIO())
    question_set = tmp_path / "set.jsonl"
    question_set.write_text(
        "\n".join(json.dumps(c, ensure_ascii=False) for c in CASES), encoding="utf-8"
    )
    out_path = tmp_path / "out" / "scorecard.json"

    stdout, stderr = await eval_answers(
        str(question_set), "--json", str(out_path), "--concurrency", "2"
    )

    assert "[4/4]" in stderr and "FAIL loop-en" in stderr and "pass good-en" in stderr
    assert "Failing cases (2)" in stdout
    assert "Q: Which payment methods do you accept?" in stdout and f"A: {LOOPING}" in stdout
    assert "why: loops: “i can check that” ×3" in stdout
    assert "why: missing fact: “1-2个工作日”" in stdout
    assert "good-en [" not in stdout  # passing cases are not listed

    document = json.loads(out_path.read_text(encoding="utf-8"))
    summary = document["summary"]
    assert (summary["cases"], summary["passed"], summary["loops"]) == (4, 2, 1)
    assert summary["failing"] == ["loop-en", "wrong-fact-zh"]
    assert summary["answers"] == 5 and summary["language_right_pct"] == 100.0
    assert summary["facts_present_pct"] == 50.0 and summary["over_limit"] == 0
    assert summary["no_model_answer"] == 0
    assert summary["by_language"]["en"]["cases"] == 3
    assert summary["by_language"]["zh-CN"]["passed"] == 0
    assert summary["by_category"]["follow_up"]["pass_rate_pct"] == 100.0
    assert summary["models"] == {"synthetic-token-source": 5}
    assert summary["median_answer_ms"] > 0

    cases = {case["id"]: case for case in document["cases"]}
    assert set(cases) == {c["id"] for c in CASES}
    good = cases["good-en"]
    assert good["passed"] and good["answers"][0]["text"] == GOOD
    assert good["answers"][0]["finish_reason"] == "stop"
    assert good["answers"][0]["fallback"] is False
    # Retrieval ran: the answer names the help-centre article it was grounded in.
    assert "Shipping and delivery" in good["answers"][0]["sources"]
    follow = cases["follow-en"]
    assert [a["question"] for a in follow["answers"]] == CASES[2]["turns"]
    assert follow["passed"] and follow["answers"][0]["text"] == GOOD
    looping = cases["loop-en"]
    assert not looping["passed"] and looping["answers"][0]["checks"]["loop"]
    assert looping["score"]["missing_facts"] == [["PayPal"]]
    assert document["run"]["concurrency"] == 2

    # The follow-up went to the model with the first turn and its answer in the prompt.
    prompt = next(p for p in scripted_worker.prompts.values() if "United Kingdom" in p)
    assert "How long does delivery take to Germany?" in prompt and GOOD in prompt

    # A quick try: two categories, the first case of them.
    asked = len(scripted_worker.prompts)
    stdout, stderr = await eval_answers(
        str(question_set), "--only", "follow_up,not_offered", "--limit", "1"
    )
    assert "Answer scorecard: 1 case (1 en), 1 answer" in stdout
    assert "[1/1] FAIL loop-en" in stderr
    assert len(scripted_worker.prompts) == asked + 1


async def test_an_answer_the_model_never_gave_counts_as_none(
    scripted_worker, tmp_path, monkeypatch
):
    """A deadline passes: the case fails as "no model answer", and the fallback rules' apology
    that follows is neither measured as the model's nor taken as an offer of a human."""
    monkeypatch.setitem(settings.CHAT, "FIRST_TOKEN_TIMEOUT_SECONDS", 0.5)
    scripted_worker.first_token_delay = 3
    question_set = tmp_path / "set.jsonl"
    question_set.write_text(
        json.dumps(
            {
                "id": "slow-complaint",
                "category": "complaint",
                "language": "en",
                "turns": ["My parcel is late again. This is ridiculous!"],
                "expect": "complaint",
            }
        ),
        encoding="utf-8",
    )
    out_path = tmp_path / "scorecard.json"

    stdout, _ = await eval_answers(str(question_set), "--json", str(out_path))

    assert "why: no model answer (timeout)" in stdout
    document = json.loads(out_path.read_text(encoding="utf-8"))
    summary = document["summary"]
    assert (summary["passed"], summary["no_model_answer"]) == (0, 1)
    assert summary["complaints_offered_human_pct"] == 0.0
    assert summary["language_right_pct"] is None  # no answer of the model to measure
    answer = document["cases"][0]["answers"][0]
    assert answer["model_failed"] and answer["finish_reason"] == "timeout"
    assert answer["checks"] is None


async def test_without_a_worker_it_says_what_to_run(tmp_path):
    question_set = tmp_path / "set.jsonl"
    question_set.write_text(json.dumps(CASES[0]), encoding="utf-8")
    with pytest.raises(CommandError, match="run_inference_worker"):
        await eval_answers(str(question_set))


async def test_the_sample_set_needs_the_sample_help_centre(scripted_worker):
    with pytest.raises(CommandError, match="import_knowledge --sample"):
        await eval_answers("--limit", "1")


async def test_a_broken_question_set_is_refused_before_asking(scripted_worker, tmp_path):
    question_set = tmp_path / "set.jsonl"
    question_set.write_text(
        json.dumps(CASES[0]) + "\n" + json.dumps({**CASES[1], "facts": []}), encoding="utf-8"
    )
    with pytest.raises(CommandError, match="line 2: an 'answer' case needs at least one fact"):
        await eval_answers(str(question_set))
    assert scripted_worker.prompts == {}
