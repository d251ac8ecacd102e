"""docs/benchmarks.md and docs/benchmarks.png from a run's results.

A run of one part (`--only`) keeps the other part's section of the page and its figures: each
part's raw results are kept in var/bench/<part>.json for the chart.
"""

import dataclasses
import datetime as dt
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import psutil

from bench import (
    api_latency,
    engine_sweep,
    knowledge,
    pipeline,
    prefix_cache,
    scorecard,
    vs_vllm,
)
from bench.processes import LOG_DIR, ROOT

PRODUCT_DIRS = ("chat", "agents", "cs_site", "inference_worker", "runtime", "templates", "static")
# The page's sections, in order.
PARTS = ("header", "pipeline", "vllm", "api", "knowledge", "scorecard", "sweep", "prefix")


def _fmt(value, digits=0, unit="") -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def _mark(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


# --- raw results, kept between runs of one part ----------------------------------------------


def _pipeline_data(results: pipeline.Results) -> dict:
    return dataclasses.asdict(results)


def _vllm_data(results: vs_vllm.Results) -> dict:
    rows = {}
    for concurrency in results.plan.concurrency:
        ours = vs_vllm.summarize(results.answers[(concurrency, "ours")])
        theirs = vs_vllm.summarize(results.answers[(concurrency, "theirs")])
        rows[str(concurrency)] = {
            "ours": ours,
            "theirs": theirs,
            "compared": vs_vllm.comparison(ours, theirs),
            "spread": vs_vllm.spread(
                results.answers[(concurrency, "ours")], results.answers[(concurrency, "theirs")]
            ),
            "same_text": results.same_text[concurrency],
            "serving_cpu_ms_per_token": {
                side: vs_vllm.ms_per_token(*results.serving_cpu[(concurrency, side)])
                for side in ("ours", "theirs")
                if (concurrency, side) in results.serving_cpu
            },
            "serving_cpu_parts": {
                side: vs_vllm.parts_per_token(
                    results.serving_parts[(concurrency, side)],
                    results.serving_cpu[(concurrency, side)][1],
                )
                for side in ("ours", "theirs")
                if (concurrency, side) in results.serving_parts
            },
        }
    return {
        "plan": dataclasses.asdict(results.plan),
        "rows": rows,
        "others_cpu": results.others_cpu,
        "prompt_tokens": results.system_prompt_tokens,
        "model": results.model,
        "engine_cores": engine_cores(results.engine_env, results.cores),
    }


def engine_cores(engine_env: dict, cores: int) -> str:
    """Which cores the engines computed on, in words: on a small host the desk gives the
    model every core (inference_worker/engines.py), and the serving processes share them."""
    if not cores:
        return ""
    reserved = int(engine_env.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "1"))
    if reserved == 0:
        return f"compute threads on all {cores} cores, shared with the serving processes"
    return (
        f"compute threads on {max(cores - reserved, 1)} of {cores} cores, {reserved} kept "
        "free for the serving processes (`INFERENCE_CPU_RESERVED_CORES`)"
    )


def _load_or_save(name: str, data: dict | None) -> dict | None:
    path = LOG_DIR / f"{name}.json"
    if data is not None:
        data["measured"] = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, code {_revision()}"
        path.write_text(json.dumps(data, indent=1))
        return data
    return json.loads(path.read_text()) if path.exists() else None


# --- the page ----------------------------------------------------------------------------------


def _revision() -> str:
    """The commit measured, and whether product files had changes not committed yet."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    if os.environ.get("BENCH_CODE"):  # a run from an exported tree names its commit itself
        return os.environ["BENCH_CODE"]
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if line[3:].split("/")[0] in PRODUCT_DIRS
    ]
    return commit + (
        f" with uncommitted changes in {len(changed)} product files" if changed else ""
    )


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{psutil.cpu_count()} cores ({cpu}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )


def pipeline_section(data: dict, quick: bool) -> str:
    plan = data["plan"]
    out = [
        "## 1. The pipeline alone: one Daphne process",
        "",
        f"Measured {data.get('measured', '')}.",
        "",
        f"Answers come from a synthetic token source at the real model's delta rate: "
        f'{plan["words"]} words ("word0 word1 …"), one due every ~40 ms '
        f"({data['chars_per_second']:.0f} characters/s, the words being 6–8 characters with "
        f"their space), so an answer streams for {data['answer_seconds']:.1f} s. It runs in "
        "the product's worker loop (channel, presence, coalescing) with 1,000 slots, so "
        "admission control never refuses and what is measured is Daphne, Channels and Redis. "
        "The customers are a separate process (`bench/loadgen.py`) with WebSocket clients at "
        "`/ws/chat/`; every socket is a new conversation.",
        "",
        "### Idle sockets",
        "",
        "Connected customer sockets that do nothing. After each step every socket is pinged "
        "(100 in flight); Daphne's CPU is measured over "
        f"{plan['idle_window']:g} s of idleness after that. Daphne's RSS before any socket: "
        f"{data['baseline_rss_mb']:.0f} MB.",
        "",
        "| sockets | open, answering ping | silent | connect errors | pong p50 / p99 | "
        "Daphne CPU idle | Daphne RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for step in data["idle"]:
        out.append(
            f"| {step['target']:,} | {step['answered_ping']:,} | {step['silent']} | "
            f"{sum(step['connect_errors'].values())} | {_fmt(step['pong_ms']['p50'])} / "
            f"{_fmt(step['pong_ms']['p99'])} ms | {step['daphne_cpu']:.1f} % | "
            f"{step['daphne_rss_mb']:.0f} MB |"
        )
    out += [
        "",
        "### Streaming conversations",
        "",
        "Each of N customer sockets sends one message (the messages spread evenly at "
        f"{plan['arrivals_per_second']:.0f} a second) and reads the streamed answer to its "
        "`bot.done`.",
        "",
        "- **exact**: the streamed text equals the synthetic answer, character for character.",
        "- **lost**: no `bot.done` in time (the answer's length + the spread + 40 s).",
        "- **failed**: a fallback other than busy, an `error` frame, a cut-off (partial) answer "
        "or a text that differs. **busy**: the explicit overload answer (fallback `busy`), "
        "allowed above 250 streams if it comes within 2 s (its time is in *busy max*).",
        "- **first token**: from sending the message to the first `bot.delta`.",
        "- **delta lag**: for every delta of every exact answer, its arrival minus the moment "
        "the synthetic engine produced the last word in it. The engine yields word *i* at its "
        "answer's start + *i*'s place in a fixed schedule (an absolute schedule, so its own "
        "timer overshoot cannot accumulate) and records that start (wall clock, same machine, "
        "same clock as the client) in Redis under the message's tag. The lag is therefore "
        "everything the pipeline adds: coalescing, the worker's sends, Redis, Daphne, the "
        "socket, and the client's own event loop (its p99 wake-up delay is in the last column; "
        "it is small: the load generator does not collect garbage while it times deltas). "
        "*While all stream*: the deltas that arrived while every stream of the "
        "step streamed at once (from the last stream's first delta to the first `bot.done`); "
        "the column before counts the whole step, conversations starting at "
        f"{plan['arrivals_per_second']:.0f} a second included.",
        "- CPU: share of one core over the step (from the first message to the last answer); "
        "*others* is what the rest of the machine used meanwhile (not the bench's processes: "
        "e.g. another developer's tests). RSS is Daphne's peak. *Backlog* is the most messages "
        "seen waiting in Redis for one process (every reply channel of a Daphne process shares "
        "one Redis key), *frames/s* the deltas delivered per second.",
        "- "
        + (
            "Daphne ran on a core of its own, the load generator, the worker, Redis and "
            "the bench on the other(s): one Daphne process is what is measured, and in "
            "production it has its core (one per core behind nginx, the model elsewhere)."
            if data.get("pinned")
            else "Daphne shared the machine's cores with the load generator, the worker and "
            "Redis (one core: nothing could be pinned)."
        ),
        "",
        "| streams | exact | lost | failed | busy (max) | first token p50 / p99 | "
        "delta lag p50 / p99 | while all stream p50 / p99 | Daphne CPU | worker CPU | "
        "others CPU | Daphne RSS | backlog | frames/s | client loop p99 | targets |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for step in data["streams"]:
        ours_cpu = step["daphne_cpu"] + step["worker_cpu"] + step["redis_cpu"] + step["loadgen_cpu"]
        marks = "; ".join(f"{k}: {_mark(ok)}" for k, ok in pipeline.verdicts(step).items())
        steady = step.get("delta_lag_all_streaming_ms") or {"p50": None, "p99": None}
        out.append(
            f"| {step['streams']} | {step['exact']} | {step['lost']} | "
            f"{step['failed'] + step['wrong']} | {step['busy']} ({_fmt(step['busy_max_ms'])} ms)"
            f" | {_fmt(step['first_token_ms']['p50'])} / {_fmt(step['first_token_ms']['p99'])} "
            f"ms | {_fmt(step['delta_lag_ms']['p50'])} / {_fmt(step['delta_lag_ms']['p99'])} ms"
            f" | {_fmt(steady['p50'])} / {_fmt(steady['p99'])} ms"
            f" | {step['daphne_cpu']:.0f} % | {step['worker_cpu']:.0f} % | "
            f"{max(0.0, step['machine_cpu'] - ours_cpu):.0f} % | "
            f"{step['daphne_peak_rss_mb']:.0f} MB | {step['peak_backlog']:,} | "
            f"{step['frames_per_second']:.0f} | {_fmt(step['client_loop_lag_p99_ms'])} ms | "
            f"{marks} |"
        )
    reasons = {step["streams"]: step["reasons"] for step in data["streams"] if step["reasons"]}
    if reasons:
        out += ["", "Why answers were not exact:", ""]
        for streams, why in reasons.items():
            out.append(f"- {streams} streams: " + ", ".join(f"{k} ×{v}" for k, v in why.items()))
    best = max((step["frames_per_second"] for step in data["streams"]), default=0)
    behind = [step["streams"] for step in data["streams"] if step["peak_backlog"] >= 1000]
    out += [
        "",
        f"At most {best:.0f} frames/s reached the customers in any step. A stream sends ~25 "
        "deltas/s while its coalescing interval is at most 40 ms (up to ~80 streams per "
        "process), 10/s at the 100 ms bound (200+ streams), so that is about "
        f"{best / 25:.0f} streams' worth at the start of the ramp and {best / 10:.0f} at its end. "
        + (
            f"With {', '.join(map(str, behind))} streams Daphne read its Redis channel slower "
            "than the worker wrote to it (backlog ≥ 1,000 messages): the deltas waited there, "
            "hence the lag; a backlog of 20,000 is the channel's capacity, past which the worker "
            "gives answers up as overloaded."
            if behind
            else "Daphne kept up with every step."
        ),
        "",
        f"Targets (from the issue): up to {pipeline.SAFE_STREAMS} streams 0 lost/failed; above, "
        f"overflow only as explicit busy answers within {pipeline.BUSY_WITHIN_MS / 1000:g} s; "
        f"p99 added delta lag ≤ {pipeline.LAG_TARGET_MS} ms at {pipeline.SAFE_STREAMS} streams "
        "(checked on the deltas sent while all of them stream).",
    ]
    if quick:
        out += ["", "*(a `--quick` run: small steps, not the issue's figures)*"]
    return "\n".join(out)


def _rounds_text(plan: dict) -> str:
    """ "6 each per concurrency", or "24 each at 1 chat and 6 at 16" when 1 chat has its own."""
    one = plan.get("one_chat_rounds")
    if one is None or 1 not in plan["concurrency"]:
        return f"{plan['rounds']} each per concurrency"
    others = [c for c in plan["concurrency"] if c != 1]
    tail = f" and {plan['rounds']} at {', '.join(map(str, others))}" if others else ""
    return f"{one} each at 1 chat{tail}"


def vllm_section(data: dict, quick: bool) -> str:
    plan = data["plan"]
    out = [
        "## 2. The whole stack against vLLM's own OpenAI server",
        "",
        f"Measured {data.get('measured', '')}.",
        "",
        "Ours: Daphne + `manage.py run_inference_worker` (vLLM's AsyncLLM in the worker) with "
        f"{data.get('model') or 'SmolLM2-135M-Instruct'} from `var/models/` (the embedded "
        "model, `INFERENCE_EMBEDDED_MODEL`), driven through customer WebSockets at "
        "`/ws/chat/`. Theirs: `python -m vllm.entrypoints.openai.api_server` on the same model "
        "folder, streaming `/v1/chat/completions` with `stream_options.include_usage`. Same "
        "max_model_len, dtype and engine settings (slots, step size, KV space, cores: "
        "`inference_worker/engines.py` gives theirs what ours takes"
        + (f"; here {data['engine_cores']}" if data.get("engine_cores") else "")
        + "), "
        + (
            "both with `--enforce-eager` (no torch.compile: ~35 s start instead of 2-3 min, the "
            "same for both)"
            if plan["eager"]
            else "both compiled (no enforce-eager)"
        )
        + ", vLLM's default sampling defaults (`--generation-config vllm` on theirs; the "
        "model folder sets none anyway). The same questions and sampling: greedy "
        f"(temperature 0, top_p 1, frequency_penalty 0), max_tokens {plan['max_tokens']}; "
        "ours through the default bot profile, theirs in the request. Theirs gets the very "
        "system prompt ours renders (the default profile's, for an English conversation), so "
        "the prompts are the same tokens (prompt tokens seen: ours "
        f"{data['prompt_tokens']['ours']}, theirs {data['prompt_tokens']['theirs']}"
        + (
            "; they differ by the minute in the prompt at most)."
            if data["prompt_tokens"]["ours"] == data["prompt_tokens"]["theirs"]
            else "; **not the same**: a length only ours saw is a prompt theirs never got, "
            "e.g. a question the product's guards asked the model again)."
        ),
        "",
        "Rounds alternate, ours then theirs, "
        + _rounds_text(plan)
        + " after one unmeasured warm-up round each; never both loaded at once: a round starts "
        "when both engines have had no request running or waiting for "
        f"{vs_vllm.QUIET_SECONDS:g} s. At 1 chat a round asks "
        + (
            "one question, so the sides alternate answer by answer"
            if plan["questions_in_a_row"] == 1
            else f"{plan['questions_in_a_row']} questions one after another"
        )
        + "; at 16, the 16 chats connect first and then ask at once (a wave of customers). "
        "Sockets and HTTP clients are set up before the clock starts (sockets then settle "
        f"{vs_vllm.SETTLE_SECONDS:g} s). *First token*: "
        "from sending to the first text; *tokens/s*: completion tokens (each side's own usage "
        "count) over the time answers were running (the union of send→end intervals). While "
        f"the rounds ran, the rest of the machine used {_fmt(data['others_cpu'])} % of one "
        "core (of 200 %).",
        "",
        "| chats | side | answers | failed (why) | first token p50 / p99 | tokens/s | "
        "tokens/answer |",
        "|---:|---|---:|---|---:|---:|---:|",
    ]
    for concurrency, row in data["rows"].items():
        for side, label in (("ours", "ours"), ("theirs", "vLLM server")):
            s = row[side]
            why = ", ".join(f"{k} ×{v}" for k, v in s.get("failures", {}).items())
            out.append(
                f"| {concurrency} | {label} | {s['answers']} | {s['failed']}"
                f"{f' ({why})' if why else ''} | "
                f"{_fmt(s['first_token_ms']['p50'])} / {_fmt(s['first_token_ms']['p99'])} ms | "
                f"{_fmt(s['tokens_per_second'], 1)} | {_fmt(s['mean_tokens'], 1)} |"
            )
    out += [
        "",
        "A failed answer is one the customer got no model text for (e.g. our first-token "
        "deadline, `CHAT_FIRST_TOKEN_TIMEOUT_SECONDS`, passed and the fallback answered); "
        "first token and tokens/s count the answers that did not fail, tokens/s over the "
        "time all of them ran.",
        "",
        "*Rounds*: the lowest and highest ratio of one round of ours against the round of "
        "theirs next to it: how much a single round's figure moves on this shared machine.",
        "",
        "| chats | first token p50 ours/theirs (rounds) | p99 ours/theirs | tokens/s "
        "ours/theirs (rounds) | identical answers | targets |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for concurrency, row in data["rows"].items():
        c = row["compared"]
        marks = "; ".join(f"{k}: {_mark(ok)}" for k, ok in vs_vllm.verdicts(c).items())
        same, compared = row["same_text"]
        rounds = row.get("spread") or {}

        def low_high(key, rounds=rounds):
            low, high = rounds.get(key) or (None, None)
            return f" ({_fmt(low, 2)}–{_fmt(high, 2)})" if low is not None else ""

        out.append(
            f"| {concurrency} | {_fmt(c['first_token_p50_ratio'], 2, '×')}"
            f"{low_high('first_token_p50_ratio')} | "
            f"{_fmt(c['first_token_p99_ratio'], 2, '×')} | "
            f"{_fmt(c['tokens_per_second_ratio'], 2, '×')}{low_high('tokens_per_second_ratio')} "
            f"| {same} of {compared} | {marks} |"
        )
    cpu_rows = [
        (concurrency, row["serving_cpu_ms_per_token"])
        for concurrency, row in data["rows"].items()
        if row.get("serving_cpu_ms_per_token")
    ]
    if cpu_rows:
        out += [
            "",
            "*Serving CPU per token*: CPU time of the processes that carry the tokens from the "
            "engine to the client, over the measured rounds, per completion token; the "
            "engine's own processes are left out. Ours: the worker's main process (vLLM's "
            "AsyncLLM front end and our loop), Daphne and Redis; theirs: the API server (the "
            "same AsyncLLM front end, and HTTP). On a host whose cores all compute, this is "
            "time taken from the engine.",
            "",
            "| chats | ours | of which | vLLM server |",
            "|---:|---:|---|---:|",
            *(
                f"| {concurrency} | {_fmt(cpu.get('ours'), 2, ' ms')} | "
                f"{data['rows'][concurrency].get('serving_cpu_parts', {}).get('ours', '–')} | "
                f"{_fmt(cpu.get('theirs'), 2, ' ms')} |"
                for concurrency, cpu in cpu_rows
            ),
        ]
    out += [
        "",
        f"Targets (from the issue): first-token p50 ≤ {vs_vllm.FIRST_TOKEN_RATIO_MAX}× at 1 and "
        f"16 chats, aggregate tokens/s ≥ {vs_vllm.TOKENS_PER_SECOND_RATIO_MIN}×.",
    ]
    if quick:
        out += ["", "*(a `--quick` run: few rounds, short answers, not the issue's figures)*"]
    return "\n".join(out)


def api_section(data: dict, quick: bool) -> str:
    rows = "\n".join(
        f"| {name} | {_fmt(row['first_token_ms']['p50'])} | {_fmt(row['first_token_ms']['p99'])}"
        f" | {row['answers']} | {row['failed']} |"
        for name, row in data["rows"].items()
    )
    return "\n".join(
        [
            "## Part 3: what the HTTP API adds to the first token"
            + (" (quick run)" if quick else ""),
            "",
            "The real model at one chat, the same questions asked four ways, interleaved round by "
            "round: the widget's socket, the chat API streaming (`POST /api/v1/chat`, SSE), the "
            "desk's OpenAI-compatible endpoint (`/v1/chat/completions`, streaming), and vLLM's own "
            "OpenAI server on the same model and sampling (`bench/api_latency.py`).",
            "",
            "| Path | First token p50 (ms) | p99 (ms) | Answers | Failed |",
            "| --- | --- | --- | --- | --- |",
            rows,
            "",
            f"- Chat API over the socket: **{_fmt(data['chat_api_over_socket'], 2)}×** first token "
            "p50.",
            f"- The desk's /v1 over vLLM's /v1: **{_fmt(data['desk_v1_over_vllm'], 2)}×** first "
            "token p50.",
        ]
    )


def knowledge_section(data: dict, quick: bool) -> str:
    r = data["retrieval"]
    return "\n".join(
        [
            "## Part 4: knowledge retrieval",
            "",
            "`manage.py eval_knowledge chat/knowledge/sample/eval.jsonl` on the sample help centre "
            "(English and Chinese questions, and some no article answers):",
            "",
            "```",
            data["eval"],
            "```",
            "",
            f"On {r['passages']:,} synthetic passages (half English, half Chinese, 20 sites), one "
            f"search takes **p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms** (mean {r['mean_ms']} "
            f"ms; {r['queries_with_hits']:.0%} of the questions found a passage); building the "
            f"index took {r['build_s']} s (`bench/knowledge.py`).",
        ]
    )


def _section(old_page: str, name: str, body: str | None) -> str:
    """The section `name`: the new body, else the one of the page written before (a part not
    run this time), else nothing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if body is not None:
        return f"{start}\n{body}\n{end}"
    found = re.search(re.escape(start) + ".*?" + re.escape(end), old_page, re.S)
    return found.group(0) if found else ""


def rewrite(*, out_dir: str) -> list[Path]:
    """The page's part sections and the chart again from the last run's saved figures (after
    a change to this module), the header as it was."""
    pipe, vllm = _load_or_save("pipeline", None), _load_or_save("vllm", None)
    api = _load_or_save("api", None)
    know = _load_or_save("knowledge", None)
    card = _load_or_save("scorecard", None)
    sweep = _load_or_save("sweep", None)
    prefix = _load_or_save("prefix", None)
    md_path, png_path = Path(out_dir) / "benchmarks.md", Path(out_dir) / "benchmarks.png"
    old = md_path.read_text() if md_path.exists() else ""
    bodies = {
        "header": None,
        "pipeline": pipeline_section(pipe, pipe.get("quick", False)) if pipe else None,
        "vllm": vllm_section(vllm, vllm.get("quick", False)) if vllm else None,
        "api": api_section(api, api.get("quick", False)) if api else None,
        "knowledge": knowledge_section(know, False) if know else None,
        "scorecard": scorecard.section(card, card["plan"]["quick"]) if card else None,
        "sweep": engine_sweep.section(sweep, sweep["plan"]["quick"]) if sweep else None,
        "prefix": prefix_cache.section(prefix, prefix["plan"]["quick"]) if prefix else None,
    }
    page = "\n\n".join(block for name in PARTS if (block := _section(old, name, bodies[name])))
    md_path.write_text(page.rstrip() + "\n")
    from bench.chart import draw

    draw(pipe, vllm, png_path)
    return [md_path, png_path]


def write(results: dict, *, out_dir: str, quick: bool, minutes: float) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = _load_or_save(
        "pipeline",
        {**_pipeline_data(results["pipeline"]), "quick": quick} if "pipeline" in results else None,
    )
    vllm = _load_or_save(
        "vllm", {**_vllm_data(results["vllm"]), "quick": quick} if "vllm" in results else None
    )
    api = _load_or_save(
        "api", {**api_latency.data(results["api"]), "quick": quick} if "api" in results else None
    )
    know = _load_or_save("knowledge", results.get("knowledge"))
    card = _load_or_save("scorecard", results.get("scorecard"))
    sweep = _load_or_save("sweep", results.get("sweep"))
    prefix = _load_or_save("prefix", results.get("prefix"))
    md_path = out / "benchmarks.md"
    old = md_path.read_text() if md_path.exists() else ""
    header = "\n".join(
        [
            "# Benchmarks",
            "",
            "Written by `make bench` (`python -m bench`; `--quick` for a short try, `--only "
            "pipeline|vllm|api|knowledge|scorecard|sweep|prefix` for one part). Not part of "
            "`make test`. Process logs of the last run: `var/bench/bench.log`.",
            "",
            f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {minutes:.0f} min, parts: "
            f"{', '.join(results) or 'none'}. Code: {_revision()}. Machine: {_machine()}. "
            "**Measured on a 2-core machine**, which other work may share (here: another "
            "developer's test runs); the *others CPU* figures show how much of its 200 % that "
            "work took while the bench ran, and the bench's figures move with it.",
            "",
            "![benchmark chart](benchmarks.png)",
        ]
    )
    bodies = {
        "header": header,
        "pipeline": pipeline_section(pipe, quick) if "pipeline" in results else None,
        "vllm": vllm_section(vllm, quick) if "vllm" in results else None,
        "api": api_section(api, quick) if "api" in results else None,
        "knowledge": knowledge_section(know, quick) if "knowledge" in results else None,
        "scorecard": scorecard.section(card, quick) if "scorecard" in results else None,
        "sweep": engine_sweep.section(sweep, quick) if "sweep" in results else None,
        "prefix": prefix_cache.section(prefix, quick) if "prefix" in results else None,
    }
    page = "\n\n".join(block for name in PARTS if (block := _section(old, name, bodies[name])))
    md_path.write_text(page.rstrip() + "\n")
    png_path = out / "benchmarks.png"
    from bench.chart import draw

    draw(pipe, vllm, png_path)
    return [md_path, png_path]


def summary(results: dict) -> str:
    lines = []
    if "pipeline" in results:
        lines.append("Pipeline (one Daphne process):")
        for step in _pipeline_data(results["pipeline"])["streams"]:
            lines.append(pipeline._stream_line(step))
    if "vllm" in results:
        data = _vllm_data(results["vllm"])
        lines.append("Whole stack vs vLLM's OpenAI server:")
        for concurrency, row in data["rows"].items():
            marks = ", ".join(
                f"{k}: {'met' if ok else 'MISSED'}"
                for k, ok in vs_vllm.verdicts(row["compared"]).items()
            )
            c = row["compared"]
            ft_low, ft_high = row["spread"]["first_token_p50_ratio"]
            tps_low, tps_high = row["spread"]["tokens_per_second_ratio"]
            lines.append(
                f"  {concurrency:>2} chat(s): first token p50 ratio "
                f"{_fmt(c['first_token_p50_ratio'], 2)}× (rounds {_fmt(ft_low, 2)}–"
                f"{_fmt(ft_high, 2)}), tokens/s ratio "
                f"{_fmt(c['tokens_per_second_ratio'], 2)}× (rounds {_fmt(tps_low, 2)}–"
                f"{_fmt(tps_high, 2)}) | {marks}"
            )
    if "api" in results:
        lines.append("What the HTTP API adds to the first token (real model, 1 chat):")
        lines += api_latency.lines(api_latency.data(results["api"]))
    if "knowledge" in results:
        lines.append("Knowledge retrieval:")
        lines += knowledge.lines(results["knowledge"])
    if "scorecard" in results:
        lines.append("Answer scorecard:")
        lines += scorecard.lines(results["scorecard"])
    if "sweep" in results:
        lines.append("The engine's settings (whole stack, waves of chats):")
        lines += engine_sweep.lines(results["sweep"])
    if "prefix" in results:
        lines.append("The prompt's layout and vLLM's prefix cache (before → after):")
        lines += prefix_cache.lines(results["prefix"])
    return "\n".join(lines)
