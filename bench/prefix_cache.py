"""Part 7: the system prompt's layout and vLLM's prefix cache.

Sixteen customers ask grounded questions (the sample help centre's, half English, half
Chinese), each from another region and time zone and each a minute after the one before: the
prompts the answer run builds for them (the system prompt, the passages the retrieval finds,
`inference_worker.protocol.grounded_system`), before and after the layout change:

- *before*: the previous default template filled in the order its lines are written, as the
  desk sent it: it began "You are the customer-service assistant of {site_name}. The current
  time is {current_time}", so each minute's and each region's prompt was new from its first
  line;
- *after*: what the desk sends now (`chat.prompting.render_system_prompt` with the shipped
  default, whose lines naming a conversation's variables come after the rules, as
  `laid_out` places them in any template): every conversation starts with the same text.

The real engine (the default model, as the worker builds it, in a process of its own) answers
both sets in alternating rounds, its prefix cache emptied before each: one after another (the
customers arriving over time) and sixteen at once. vLLM's own counters
(`vllm:prefix_cache_queries` and `vllm:prefix_cache_hits`, in prompt tokens) give the share of
the prompt the cache served; the first token is timed on the engine's stream. The cache reuses
whole blocks only (128 tokens on a CPU by default, 16 on a GPU): the run is repeated with
32-token blocks (`INFERENCE_BLOCK_SIZE`) to show what the block size leaves unused.
"""

import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from bench.processes import LOG_DIR, ROOT, Bench

LAYOUTS = ("before", "after")
CUSTOMERS = (  # (language, region, time zone)
    ("en", "Germany", "Europe/Berlin"),
    ("zh-CN", "China", "Asia/Shanghai"),
    ("en", "United Kingdom", "Europe/London"),
    ("zh-CN", "Taiwan", "Asia/Taipei"),
    ("en", "United States", "America/New_York"),
    ("zh-CN", "Singapore", "Asia/Singapore"),
    ("en", "France", "Europe/Paris"),
    ("zh-CN", "Hong Kong", "Asia/Hong_Kong"),
    ("en", "Canada", "America/Toronto"),
    ("zh-CN", "Malaysia", "Asia/Kuala_Lumpur"),
    ("en", "Australia", "Australia/Sydney"),
    ("zh-CN", "China", "Asia/Urumqi"),
    ("en", "India", "Asia/Kolkata"),
    ("zh-CN", "Macao", "Asia/Macau"),
    ("en", "Japan", "Asia/Tokyo"),
    ("zh-CN", "United States", "America/Los_Angeles"),
)


@dataclass(frozen=True)
class Plan:
    rounds: int = 3  # per layout, block size and arrival
    max_tokens: int = 16  # the first token is what is measured; a few more keep it honest
    block_sizes: tuple[int, ...] = (0, 32)  # 0: vLLM's default for the platform
    eager: bool = False  # compiled, as `make run` serves
    quick: bool = False


FULL = Plan()
QUICK = Plan(rounds=1, block_sizes=(0,), eager=True, quick=True)


def _questions() -> list[tuple[str, str]]:
    """Sixteen in-scope questions of the sample set, English and Chinese in turn."""
    eval_set = ROOT / "chat" / "knowledge" / "sample" / "eval.jsonl"
    rows = [json.loads(line) for line in eval_set.read_text().splitlines() if line.strip()]
    english = [r["question"] for r in rows if r.get("expected") and r["language"] == "en"]
    chinese = [r["question"] for r in rows if r.get("expected") and r["language"] != "en"]
    return [
        (language, (english if language == "en" else chinese)[i // 2])
        for i, (language, _, _) in enumerate(CUSTOMERS)
    ]


def prompts(now: dt.datetime) -> dict[str, list[list[dict]]]:
    """Each layout's sixteen prompts (chat messages), as the answer run builds them."""
    from chat.answering.prompt import build_messages
    from chat.knowledge import grounding, retrieval
    from chat.prompting import (
        DEFAULT_SYSTEM_PROMPT,
        PREVIOUS_DEFAULT_SYSTEM_PROMPT,
        fill_template,
        language_name,
        local_time,
        render_system_prompt,
    )
    from inference_worker.protocol import grounded_system

    out = {layout: [] for layout in LAYOUTS}
    for i, ((language, question), (_, region, timezone)) in enumerate(
        zip(_questions(), CUSTOMERS, strict=True)
    ):
        when = now + dt.timedelta(minutes=i)
        hits = retrieval.search_sync(question=question, site_id=None, language=language)
        for layout in LAYOUTS:
            if layout == "after":
                system = render_system_prompt(
                    DEFAULT_SYSTEM_PROMPT,
                    site_name="Acme",
                    language=language,
                    region=region,
                    timezone=timezone,
                    now=when,
                )
            else:
                variables = {
                    "current_time": local_time(when, timezone),
                    "user_region": region,
                    "language": language_name(language),
                    "site_name": "Acme",
                }
                system = fill_template(PREVIOUS_DEFAULT_SYSTEM_PROMPT, variables)
            grounded = grounding.ground(
                system, hits, offer_human_when_nothing=True, question=question
            )
            kept = len(grounded.grounding["passages"]) if grounded.grounding else 0
            content = grounded_system(grounded.system_prompt, grounded.grounding, kept)
            out[layout].append(build_messages(content, [{"role": "user", "content": question}]))
    return out


def run(bench: Bench, plan: Plan) -> dict:
    tqdm.write("  the sample help centre, and the prompts of sixteen customers")
    bench.manage("import_knowledge", "--sample")
    bench.manage("prepare_model", "--no-progress")
    asked = LOG_DIR / "prefix-prompts.json"
    asked.write_text(json.dumps(prompts(dt.datetime.now(dt.UTC))))
    runs = []
    for block_size in plan.block_sizes:
        label = f"{block_size}-token blocks" if block_size else "vLLM's default blocks"
        tqdm.write(f"  {label}: loading the engine (compiling), then the rounds")
        out = LOG_DIR / f"prefix-{block_size}.json"
        env = {**bench.env, "INFERENCE_BLOCK_SIZE": str(block_size)}
        env["INFERENCE_ENFORCE_EAGER"] = "true" if plan.eager else "false"
        with bench.log_path.open("a") as log:
            done = subprocess.run(
                [sys.executable, "-m", "bench.prefix_cache", str(asked), str(out)],
                cwd=ROOT,
                env={**env, "BENCH_PREFIX_PLAN": json.dumps(asdict(plan))},
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=1800,
            )
        if done.returncode != 0:
            # The other block size's figures still stand: say which run is missing and why.
            tqdm.write(f"  {label}: the engine failed, see {bench.log_path}")
            runs.append({"block_size": block_size, "failed": f"the engine failed ({label})"})
            continue
        result = json.loads(out.read_text())
        runs.append(result)
        for line in lines({"runs": [result]}):
            tqdm.write(line)
    if all("failed" in run for run in runs):
        raise RuntimeError(f"every prefix-cache run failed: see {bench.log_path}")
    return {"plan": asdict(plan), "runs": runs}


# --- in the engine's own process ----------------------------------------------------------------


def _counters() -> tuple[float, float]:
    """(prompt tokens queried, prompt tokens the prefix cache served) so far, from vLLM's own
    Prometheus counters in this process."""
    from prometheus_client import REGISTRY

    queries = hits = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "vllm:prefix_cache_queries_total":
                queries += sample.value
            elif sample.name == "vllm:prefix_cache_hits_total":
                hits += sample.value
    return queries, hits


async def _one(engine, request_id: str, ids: list[int], sampling: dict) -> float:
    sent = time.perf_counter()
    first = None
    async for chunk in engine.stream(request_id, ids, sampling):
        if first is None and (chunk.text or chunk.token_count):
            first = time.perf_counter()
    return 1000 * ((first or time.perf_counter()) - sent)


async def _measure(asked: dict, plan: Plan) -> dict:
    from django.conf import settings

    from inference_worker.engines import build_engine

    engine = build_engine(settings.INFERENCE)
    await engine.load_tokenizer()
    sampling = {
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": plan.max_tokens,
        "frequency_penalty": 0.0,
    }
    ids = {layout: [engine.prompt_token_ids(m) for m in asked[layout]] for layout in LAYOUTS}
    shared = {
        layout: min(_common(ids[layout][0], other) for other in ids[layout][1:])
        for layout in LAYOUTS
    }
    await _one(engine, "warm-up", ids["after"][0], sampling)  # one-off costs, unmeasured
    cells: dict[str, dict[str, list]] = {}
    n = 0
    for round_no in range(plan.rounds):
        for arrival in ("one after another", "16 at once"):
            order = LAYOUTS if round_no % 2 == 0 else LAYOUTS[::-1]
            for layout in order:
                await engine._engine.reset_prefix_cache()
                await asyncio.sleep(0.5)  # the stat loggers' last step recorded
                queries, hits = _counters()
                if arrival == "16 at once":
                    firsts = await asyncio.gather(
                        *(
                            _one(engine, f"r{(n := n + 1)}", prompt, sampling)
                            for prompt in ids[layout]
                        )
                    )
                else:
                    firsts = []
                    for prompt in ids[layout]:
                        firsts.append(await _one(engine, f"r{(n := n + 1)}", prompt, sampling))
                await asyncio.sleep(0.5)
                queries_after, hits_after = _counters()
                cell = cells.setdefault(f"{arrival}|{layout}", {"firsts": [], "rates": []})
                cell["firsts"] += firsts
                asked_tokens = queries_after - queries
                cell["rates"].append((hits_after - hits) / asked_tokens if asked_tokens else None)
    engine.shutdown()
    return {
        "block_size": settings.INFERENCE["BLOCK_SIZE"],
        "prompt_tokens": {layout: statistics.median(map(len, ids[layout])) for layout in LAYOUTS},
        "shared_tokens": shared,
        "cells": {
            key: {
                "first_token_p50_ms": statistics.median(cell["firsts"]),
                "hit_rate": statistics.median(r for r in cell["rates"] if r is not None)
                if any(r is not None for r in cell["rates"])
                else None,
            }
            for key, cell in cells.items()
        },
    }


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _child(asked_path: str, out_path: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_site.settings")
    import django

    django.setup()
    plan = Plan(**{**json.loads(os.environ["BENCH_PREFIX_PLAN"]), "block_sizes": ()})
    asked = json.loads(Path(asked_path).read_text())
    result = asyncio.run(_measure(asked, plan))
    Path(out_path).write_text(json.dumps(result, indent=1))


# --- the report ---------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _blocks(run: dict) -> str:
    return f"{run['block_size']}-token blocks" if run["block_size"] else "vLLM's default blocks"


def lines(data: dict) -> list[str]:
    out = []
    for run in data["runs"]:
        if "failed" in run:
            out.append(f"  {_blocks(run)}: {run['failed']}")
            continue
        for arrival in ("one after another", "16 at once"):
            cells = [run["cells"][f"{arrival}|{layout}"] for layout in LAYOUTS]
            out.append(
                f"  {_blocks(run)}, {arrival}: cache hits "
                + " → ".join(_pct(c["hit_rate"]) for c in cells)
                + ", first token p50 "
                + " → ".join(f"{c['first_token_p50_ms']:.0f} ms" for c in cells)
                + " (before → after)"
            )
    return out


def section(data: dict, quick: bool) -> str:
    rows = []
    for run in data["runs"]:
        if "failed" in run:
            rows.append(f"| {_blocks(run)} | {run['failed']} | | | | |")
            continue
        for arrival in ("one after another", "16 at once"):
            for layout in LAYOUTS:
                cell = run["cells"][f"{arrival}|{layout}"]
                rows.append(
                    f"| {_blocks(run)} | {arrival} | {layout} | {run['shared_tokens'][layout]} "
                    f"of {run['prompt_tokens'][layout]:.0f} | {_pct(cell['hit_rate'])} | "
                    f"{cell['first_token_p50_ms']:.0f} ms |"
                )
    plan = data["plan"]
    return "\n".join(
        [
            "## Part 7: the prompt's layout and vLLM's prefix cache"
            + (" (quick run)" if quick else ""),
            "",
            "Sixteen customers (English and Chinese, sixteen regions, a minute apart) ask the "
            "sample help centre's questions; their grounded prompts before the layout change (the "
            "previous default template as written) and after (as the desk sends them now), "
            "answered by the default model's engine "
            + ("(eager)" if plan["eager"] else "(compiled)")
            + f" in alternating rounds ({plan['rounds']} each), its prefix cache emptied before "
            "each (`bench/prefix_cache.py`). *Shared*: the prompt tokens every customer's prompt "
            "begins with (median prompt length after it). *Cache hits*: the share of prompt tokens "
            "vLLM's prefix cache served (its own counters), median over rounds.",
            "",
            "| Blocks | Arrival | Layout | Shared tokens | Cache hits | First token p50 |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
