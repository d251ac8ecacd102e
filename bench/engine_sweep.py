"""Part 6: the engine's settings, chosen by measurement.

For each setting in turn, the whole stack `make run` serves (our worker with the real default
model and one Daphne) starts with it, and waves of 1 … 32 chats are asked at once over the
customer socket, as in Part 2 (connect first, ask at once, wait for the engine to go quiet
between rounds, greedy sampling). Per wave: the first token's median and the tokens per second
of all answers together. The curve of one setting, throughput against first token, bends where
more chats stop adding throughput and only add waiting: the knee, marked as the fewest chats
that reach 90 % of the setting's best throughput.

The settings tried are the knobs a CPU host has (`docs/operations.md`, "Capacity"):
- the cores vLLM's compute threads take (`INFERENCE_CPU_RESERVED_CORES`): vLLM's own `auto`
  binding keeps one core free of them for its scheduler, and here for Daphne, Redis and the
  worker's loop too; the desk's default on a small host gives the model every core and lets
  the rest share them;
- the tokens one engine step may take (`INFERENCE_MAX_BATCHED_TOKENS`): smaller steps split a
  wave's prompts, so its first prompts start streaming sooner and streams already running
  stall less, and each step does less;
- the KV cache's size (`INFERENCE_CPU_KVCACHE_SPACE`): the default model's 24 layers of 2 KV
  heads of 64 floats make 24 KiB of cache per token in float32, so 1 GiB holds ~43,000 tokens,
  already 21 full 2,048-token chats: above that it should change nothing, which this checks.
"""

import asyncio
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

from tqdm import tqdm

from bench.processes import Bench, free_port, set_bot_profile
from bench.vs_vllm import Ours, one_round, wait_quiet
from devstack.stack import WORKER_READY_PATTERN, ReadyCheck

# The share of a setting's best throughput at which its knee is marked.
KNEE_SHARE = 0.90
# Settings within this share of the best throughput (over the whole curve) count as equal:
# the one with the lower first token wins.
EQUAL_THROUGHPUT = 0.03
# First tokens (over the whole curve) within this share of the lowest count as equal too, and
# then the setting listed first wins, the default before the others: two settings that
# differed only in a KV cache larger than needed measured 2.30 and 2.39 s in one run.
EQUAL_FIRST_TOKEN = 0.10
# The wave size the summary lines quote (the reference point; the choice uses all).
QUOTED_AT = 16


@dataclass(frozen=True)
class Setting:
    name: str
    env: tuple[tuple[str, str], ...]


# The first is what `make run` serves by default (cs_site/settings.py); each other changes one
# knob of it, except the second: the engine as vLLM sets itself up, the desk's earlier default.
SETTINGS = (
    Setting("default: every core, 256-token steps, 2 GiB KV", ()),
    Setting(
        "vLLM's own: one core kept free, 2,048-token steps",
        (("INFERENCE_CPU_RESERVED_CORES", "1"), ("INFERENCE_MAX_BATCHED_TOKENS", "2048")),
    ),
    Setting("every core, 2,048-token steps", (("INFERENCE_MAX_BATCHED_TOKENS", "2048"),)),
    Setting("every core, 512-token steps", (("INFERENCE_MAX_BATCHED_TOKENS", "512"),)),
    # Above what the slots need (the module's docstring), the cache's size should change
    # nothing: half the default checks it.
    Setting("1 GiB KV", (("INFERENCE_CPU_KVCACHE_SPACE", "1"),)),
)


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...] = (1, 4, 8, 16, 24, 32)
    rounds: int = 2  # per setting and wave size
    questions_in_a_row: int = 3  # at 1 chat: one round asks this many, one after another
    max_tokens: int = 96
    eager: bool = False  # compiled, as `make run` serves
    settings: tuple[Setting, ...] = SETTINGS
    quick: bool = False


FULL = Plan()
QUICK = Plan(
    concurrency=(1, 4, 16),
    rounds=1,
    questions_in_a_row=2,
    max_tokens=24,
    eager=True,
    settings=SETTINGS[:2],
    quick=True,
)


@dataclass
class Point:
    chats: int
    first_token_ms: float | None  # median over the waves' answers
    tokens_per_second: float | None  # median over rounds of one wave's tokens / its time
    failed: int = 0


@dataclass
class Curve:
    setting: str
    env: dict
    points: list[Point] = field(default_factory=list)
    load_seconds: float = 0.0


def _wave_rate(answers) -> float | None:
    done = [a for a in answers if a.done is not None and not a.failure]
    if not done:
        return None
    span = max(a.done for a in done) - min(a.sent for a in answers)
    return sum(a.tokens for a in done) / span if span > 0 else None


def _point(chats: int, rounds) -> Point:
    answers = [a for r in rounds for a in r]
    firsts = [1000 * (a.first_token - a.sent) for a in answers if a.first_token and not a.failure]
    rates = [rate for r in rounds if (rate := _wave_rate(r)) is not None]
    return Point(
        chats=chats,
        first_token_ms=statistics.median(firsts) if firsts else None,
        tokens_per_second=statistics.median(rates) if rates else None,
        failed=sum(1 for a in answers if a.failure),
    )


def knee(points: list[Point]) -> int | None:
    """The fewest chats reaching KNEE_SHARE of the curve's best throughput."""
    rated = [p for p in points if p.tokens_per_second]
    if not rated:
        return None
    best = max(p.tokens_per_second for p in rated)
    return min(p.chats for p in rated if p.tokens_per_second >= KNEE_SHARE * best)


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def summary(curve: dict) -> tuple[float, float] | None:
    """A whole curve in two figures: tokens per second and first token, each the geometric
    mean over the wave sizes (so 1 chat counts as much as 32); None if a wave failed."""
    points = curve["points"]
    if not points or any(
        p["failed"] or not p["tokens_per_second"] or not p["first_token_ms"] for p in points
    ):
        return None
    return (
        _geomean([p["tokens_per_second"] for p in points]),
        _geomean([p["first_token_ms"] for p in points]),
    )


def chosen(curves: list[dict]) -> int | None:
    """The index of the best setting over its whole curve: the most tokens per second, and
    among those within EQUAL_THROUGHPUT of it the lowest first token; among those within
    EQUAL_FIRST_TOKEN of that, the one listed first (the default, if it is among them).
    One wave size alone is too noisy to choose by: the same setting measured twice at 16
    chats had its median first token at 3.4 and at 5.7 s."""
    rated = [(i, figures) for i, curve in enumerate(curves) if (figures := summary(curve))]
    if not rated:
        return None
    best = max(rate for _, (rate, _first) in rated)
    close = [(i, f) for i, f in rated if f[0] >= (1 - EQUAL_THROUGHPUT) * best]
    soonest = min(first for _, (_rate, first) in close)
    return min(i for i, (_rate, first) in close if first <= (1 + EQUAL_FIRST_TOKEN) * soonest)


def _start(bench: Bench, plan: Plan, setting: Setting) -> tuple[int, list[str], float]:
    metrics_port = port = free_port()
    while port == metrics_port:  # the system may hand the same free port out twice
        port = free_port()
    started = time.monotonic()
    bench.start(
        "worker",
        [sys.executable, "manage.py", "run_inference_worker"],
        [ReadyCheck("worker", f"http://127.0.0.1:{metrics_port}/metrics", WORKER_READY_PATTERN)],
        env={
            "INFERENCE_METRICS_PORT": str(metrics_port),
            "INFERENCE_ENFORCE_EAGER": "true" if plan.eager else "false",
            # Room for the widest wave: the curve must show what lies past the default's 16.
            "INFERENCE_MAX_CONCURRENCY": str(max(plan.concurrency)),
            **dict(setting.env),
        },
        timeout=900,
    )
    loaded = time.monotonic() - started
    bench.daphne(port)
    return port, [f"http://127.0.0.1:{metrics_port}/metrics"], loaded


async def _measure(plan: Plan, port: int, metrics: list[str], bar) -> list[Point]:
    ours = Ours(port)
    await one_round(ours, 2, plan, 0)  # warm-up, not measured
    points = []
    for chats in plan.concurrency:
        rounds = []
        for round_no in range(plan.rounds):
            await wait_quiet(metrics)
            rounds.append(await one_round(ours, chats, plan, round_no * chats))
            bar.update()
        points.append(_point(chats, rounds))
        p = points[-1]
        tqdm.write(
            f"    {chats:>2} chats: first token p50 {_ms(p.first_token_ms)}, "
            f"{_rate(p.tokens_per_second)} in all" + (f", {p.failed} failed" if p.failed else "")
        )
    return points


def run(bench: Bench, plan: Plan) -> dict:
    set_bot_profile(temperature=0.0, top_p=1.0, max_tokens=plan.max_tokens, frequency_penalty=0.0)
    tqdm.write("  preparing the model (first time: converting it)")
    bench.manage("prepare_model", "--no-progress")
    curves = []
    bar = tqdm(total=len(plan.settings) * len(plan.concurrency) * plan.rounds, desc="sweep waves")
    for setting in plan.settings:
        tqdm.write(f"  {setting.name}: starting the worker (loading, compiling) and Daphne")
        try:
            port, metrics, loaded = _start(bench, plan, setting)
            points = asyncio.run(_measure(plan, port, metrics, bar))
        finally:
            bench.stop("daphne")
            bench.stop("worker")
            bench.flush_redis()
        curve = Curve(setting.name, dict(setting.env), points, round(loaded, 1))
        curves.append(asdict(curve))
    bar.close()
    data = {"plan": asdict(plan), "curves": curves}
    for curve in data["curves"]:
        curve["knee"] = knee([Point(**p) for p in curve["points"]])
    data["chosen"] = chosen(data["curves"])
    return data


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} tok/s"


def _overall(curve: dict) -> str:
    figures = summary(curve)
    return "–" if figures is None else f"{_rate(figures[0])}, {_ms(figures[1])}"


def lines(data: dict) -> list[str]:
    out = []
    for i, curve in enumerate(data["curves"]):
        at = next((p for p in curve["points"] if p["chats"] == QUOTED_AT), None)
        mark = " ← best" if i == chosen(data["curves"]) else ""
        out.append(
            f"  {curve['setting']}: knee at {curve['knee']} chats; over the curve "
            f"{_overall(curve)}; at {QUOTED_AT} chats {_rate(at and at['tokens_per_second'])}, "
            f"first token {_ms(at and at['first_token_ms'])}{mark}"
        )
    return out


def section(data: dict, quick: bool) -> str:
    plan = data["plan"]
    levels = plan["concurrency"]
    head = (
        "| Setting | "
        + " | ".join(f"{n} chats" for n in levels)
        + " | Over the curve | Knee | Load |"
    )
    rule = "| --- |" + " --- |" * (len(levels) + 3)
    rows = []
    best_index = chosen(data["curves"])
    for i, curve in enumerate(data["curves"]):
        cells = []
        for n in levels:
            p = next((p for p in curve["points"] if p["chats"] == n), None)
            cells.append(
                "–"
                if p is None
                else f"{_rate(p['tokens_per_second'])}, {_ms(p['first_token_ms'])}"
                + (f", {p['failed']} failed" if p["failed"] else "")
            )
        name = f"**{curve['setting']}**" if i == best_index else curve["setting"]
        rows.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {_overall(curve)} | {curve['knee']} | {curve['load_seconds']} s |"
        )
    best = data["curves"][best_index]["setting"] if best_index is not None else "none"
    return "\n".join(
        [
            "## Part 6: the engine's settings" + (" (quick run)" if quick else ""),
            "",
            "The whole stack (our worker with the default model, "
            + ("eager" if plan["eager"] else "compiled")
            + ", and one Daphne) started once per setting; waves of chats asked at once over "
            f"the customer socket, {plan['rounds']} rounds each, greedy, {plan['max_tokens']} "
            "tokens at most (`bench/engine_sweep.py`). Each cell: tokens per second of the "
            "whole wave, first token p50. Over the curve: each figure's geometric mean over "
            "the wave sizes. The knee: the fewest chats reaching "
            f"{KNEE_SHARE:.0%} of the setting's best throughput. Load: the worker's start, "
            "compiling included.",
            "",
            head,
            rule,
            *rows,
            "",
            "Best over the curve (most tokens per second; within "
            f"{EQUAL_THROUGHPUT:.0%} of it, the lowest first token; first tokens within "
            f"{EQUAL_FIRST_TOKEN:.0%} of that are a tie, which the setting listed first wins): "
            f"**{best}**.",
        ]
    )
