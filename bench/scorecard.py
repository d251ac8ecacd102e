"""Part 5: the answer scorecard (`manage.py eval_answers`) for each embedded model, side by
side.

For each model in turn: a worker with that model (INFERENCE_EMBEDDED_MODEL; eager, as part 2
runs its engines), the sample help centre loaded, the bot profile as shipped, and the
sample question set asked through the live answer path by `manage.py eval_answers` (a process
of its own, as an operator runs it). Its JSON summary is what the page shows. `--quick` asks
one case of each category and language instead of all of them.
"""

import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from bench.processes import LOG_DIR, ROOT, Bench, free_port, log_tail, set_bot_profile
from devstack.stack import WORKER_READY_PATTERN, ReadyCheck

# (INFERENCE_EMBEDDED_MODEL, label): the default model first.
MODELS = (
    ("qwen2.5-coder-0.5b-instruct", "Qwen2.5-Coder-0.5B"),
    ("smollm2-135m-instruct", "SmolLM2-135M"),
)
# The command's progress line for each case: "[ 12/98] pass ship-de-en (2.1 s)".
_PROGRESS = re.compile(r"^\[\s*(\d+)/(\d+)\] (pass|FAIL) ")


@dataclass(frozen=True)
class Plan:
    quick: bool = False  # one case of each category and language
    concurrency: int = 4  # cases asked at once, as the command's default
    eager: bool = True  # as part 2: no torch.compile, the engine starts in ~35 s


FULL = Plan()
QUICK = Plan(quick=True)


def run(bench: Bench, plan: Plan) -> dict:
    tqdm.write("  loading the sample help centre; the bot profile as shipped")
    bench.manage("import_knowledge", "--sample")
    _shipped_profile()
    question_set = _question_set(bench, plan)
    models = []
    for key, label in MODELS:
        models.append(
            {
                "key": key,
                "label": label,
                "summary": _one_model(bench, plan, key, label, question_set),
            }
        )
        bench.flush_redis()
    names = [sorted(m["summary"]["models"]) for m in models]
    if len({tuple(n) for n in names}) < len(names):
        tqdm.write(
            f"  WARNING: the models' answers name the same model ({names}): "
            "INFERENCE_EMBEDDED_MODEL did not take effect"
        )
    return {"plan": asdict(plan), "cases": models[0]["summary"]["cases"], "models": models}


def _shipped_profile() -> None:
    """The default profile with every setting at its shipped default: an earlier part (2)
    sets greedy sampling and short answers for its comparison, which is not what customers
    get."""
    from chat.models import BotProfile

    keep = {"id", "name", "is_default", "system_prompt", "site_name", "updated_at"}
    set_bot_profile(
        **{
            field.name: field.get_default()
            for field in BotProfile._meta.concrete_fields
            if field.name not in keep
        }
    )


def _question_set(bench: Bench, plan: Plan) -> Path:
    from chat.scorecard import questions

    if not plan.quick:
        return questions.SAMPLE_SET
    picked: dict[tuple[str, bool], str] = {}
    lines = questions.SAMPLE_SET.read_text(encoding="utf-8").splitlines()
    for line, case in zip(lines, questions.load_cases(questions.SAMPLE_SET), strict=True):
        picked.setdefault((case.category, case.is_chinese), line)
    path = bench.run_dir / "scorecard-quick.jsonl"
    path.write_text("\n".join(picked.values()) + "\n", encoding="utf-8")
    return path


def _one_model(bench: Bench, plan: Plan, key: str, label: str, question_set: Path) -> dict:
    # INFERENCE_MODEL and INFERENCE_MODEL_DIR empty: the embedded model, in its own folder,
    # whatever the shell running the bench has set.
    env = {
        "INFERENCE_EMBEDDED_MODEL": key,
        "INFERENCE_MODEL": "",
        "INFERENCE_MODEL_DIR": "",
        "INFERENCE_ENFORCE_EAGER": "true" if plan.eager else "false",
    }
    tqdm.write(f"  {label}: preparing the model (first time: download and convert)")
    _manage(bench, env, "prepare_model", "--no-progress")
    metrics_port = free_port()
    tqdm.write(f"  {label}: starting a worker (loading the model)")
    bench.start(
        "worker",
        [sys.executable, "manage.py", "run_inference_worker"],
        [
            ReadyCheck("worker", f"http://127.0.0.1:{metrics_port}/metrics", WORKER_READY_PATTERN),
        ],
        env={**env, "INFERENCE_METRICS_PORT": str(metrics_port)},
        timeout=900,
    )
    try:
        return _eval_answers(bench, plan, label, question_set)
    finally:
        bench.stop("worker")


def _manage(bench: Bench, env: dict[str, str], *args: str) -> None:
    """bench.manage with this model's environment."""
    with bench.log_path.open("a") as log:
        log.write(f"[bench] manage.py {' '.join(args)} ({env['INFERENCE_EMBEDDED_MODEL']})\n")
        log.flush()
        code = subprocess.call(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**bench.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if code != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed (exit code {code}); last lines "
            f"of {bench.log_path}:\n{log_tail(bench.log_path)}"
        )


def _eval_answers(bench: Bench, plan: Plan, label: str, question_set: Path) -> dict:
    """Run the command, its progress lines as a bar, its report in the log; its summary."""
    out = LOG_DIR / f"scorecard-{label.lower()}.json"
    argv = [
        sys.executable,
        "manage.py",
        "eval_answers",
        str(question_set),
        "--json",
        str(out),
        "--concurrency",
        str(plan.concurrency),
    ]
    from chat.scorecard import questions

    bar = tqdm(
        total=len(questions.load_cases(question_set)),
        desc=f"  {label} cases",
        unit="case",
        position=0,
    )
    with bench.log_path.open("a") as log:
        log.write(f"[bench] manage.py eval_answers ({label})\n")
        log.flush()
        process = subprocess.Popen(
            argv, cwd=ROOT, env=bench.env, stdout=log, stderr=subprocess.PIPE, text=True
        )
        for line in process.stderr:
            progress = _PROGRESS.match(line)
            if progress:
                bar.update(int(progress.group(1)) - bar.n)
            else:
                log.write(line)
        code = process.wait()
    bar.close()
    if code != 0:
        raise RuntimeError(
            f"manage.py eval_answers failed for {label} (exit code {code}); "
            f"last lines of {bench.log_path}:\n{log_tail(bench.log_path)}"
        )
    summary = json.loads(out.read_text(encoding="utf-8"))["summary"]
    tqdm.write("    " + line_of(label, summary))
    return summary


def line_of(label: str, s: dict) -> str:
    """One model's headline in a line (the terminal's summary at the end of the bench)."""

    def pct(value):
        return "–" if value is None else f"{value:.0f} %"

    median = s["median_answer_ms"]
    return (
        f"{label}: {s['passed']}/{s['cases']} passed, language right "
        f"{pct(s['language_right_pct'])}, {s['loops']} loops, {s['over_limit']} over the "
        f"limit, not covered handled {pct(s['not_covered_handled_pct'])}, complaints "
        f"offered a human {pct(s['complaints_offered_human_pct'])}, facts present "
        f"{pct(s['facts_present_pct'])}, median answer "
        + ("–" if median is None else f"{median / 1000:.1f} s")
    )


def lines(data: dict) -> list[str]:
    return ["  " + line_of(m["label"], m["summary"]) for m in data["models"]]


def section(data: dict, quick: bool) -> str:
    """The page's part 5: the models side by side, then the pass rates by category and by
    language."""
    models = data["models"]

    def row(name: str, cell) -> str:
        return f"| {name} | " + " | ".join(cell(m["summary"]) for m in models) + " |"

    def share(value) -> str:
        return "–" if value is None else f"{value:.0f} %"

    out = [
        "## Part 5: the answer scorecard" + (" (quick run)" if quick else ""),
        "",
        f"Measured {data.get('measured', '')}.",
        "",
        "`manage.py eval_answers` (`bench/scorecard.py`): the sample question set "
        "(`chat/knowledge/sample/scorecard.jsonl`"
        + (", one case of each category and language" if quick else "")
        + f", {data['cases']} cases, English and Chinese) asked through the live answer path "
        "(retrieval on the sample help centre, the bot profile as shipped, the worker, the "
        "guards), each model in turn on its own worker (eager), "
        f"{data['plan']['concurrency']} cases at once. What the customer read is scored: "
        "facts present, language, loops, length, and the expected behaviour. The profile "
        "samples (temperature 0.7), so figures move a little from run to run.",
        "",
        "| | " + " | ".join(m["label"] for m in models) + " |",
        "|---|" + "---:|" * len(models),
        row("answered by", lambda s: ", ".join(f"{k} {v}" for k, v in s["models"].items()) or "–"),
        row("cases passed", lambda s: f"{s['passed']}/{s['cases']} ({share(s['pass_rate_pct'])})"),
        row("language right (answers)", lambda s: share(s["language_right_pct"])),
        row("loops (answers)", lambda s: str(s["loops"])),
        row("over the limit (answers)", lambda s: str(s["over_limit"])),
        row(
            "not covered handled",
            lambda s: f"{share(s['not_covered_handled_pct'])} of {s['not_covered_cases']}",
        ),
        row(
            "complaints offered a human",
            lambda s: f"{share(s['complaints_offered_human_pct'])} of {s['complaint_cases']}",
        ),
        row(
            "expected facts present",
            lambda s: f"{share(s['facts_present_pct'])} of {s['answerable_cases']}",
        ),
        row(
            "median answer time",
            lambda s: (
                "–" if s["median_answer_ms"] is None else f"{s['median_answer_ms'] / 1000:.1f} s"
            ),
        ),
        row(
            "guards fired",
            lambda s: ", ".join(f"{k} {v}" for k, v in s["guards"].items()) or "none",
        ),
        row("no model answer", lambda s: str(s["no_model_answer"])),
    ]
    for title, key in (("category", "by_category"), ("language", "by_language")):
        groups = list(models[0]["summary"][key])
        out += [
            "",
            f"Passed by {title}:",
            "",
            f"| {title} | cases | " + " | ".join(m["label"] for m in models) + " |",
            "|---|---:|" + "---:|" * len(models),
        ]
        for group in groups:
            cells = []
            for m in models:
                g = m["summary"][key].get(group)
                cells.append("–" if g is None else f"{g['passed']} ({share(g['pass_rate_pct'])})")
            cases = models[0]["summary"][key][group]["cases"]
            out.append(f"| {group} | {cases} | " + " | ".join(cells) + " |")
    out += ["", "Every case, answer and reason: `var/bench/scorecard-*.json` of the last run."]
    return "\n".join(out)
