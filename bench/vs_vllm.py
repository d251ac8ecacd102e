"""Part 2: the whole stack (Daphne + the real worker with the real model) against vLLM's own
OpenAI server on the same model, prompts and sampling.

Both run on this machine at the same time but are loaded in turn: rounds alternate (ours,
theirs, ours, theirs, ...) so that a slow minute of the machine falls on both, and a round starts
only when both engines have gone quiet. Both are compiled, as `make run` serves (eager, with
`--eager`, starts in a fraction of the time but is not what anyone runs). A round of many chats
connects them all first and then asks at once: a wave of customers. Greedy sampling
(temperature 0, top_p 1) with the same max_tokens: both produce the same answers, give or take
bf16 batch numerics, hence about the same token counts; the counts are reported to show it,
and so are the prompt tokens each side saw, which must be the same.
"""

import asyncio
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from tqdm import tqdm
from websockets.asyncio.client import connect

from bench.processes import ORIGIN, Bench, free_port, set_bot_profile
from bench.stats import busy_time, p50_p99
from devstack.stack import WORKER_READY_PATTERN, ReadyCheck
from inference_worker.engines import cpu_environment, max_batched_tokens, resolved_dtype

# From the project's issue.
FIRST_TOKEN_RATIO_MAX = 1.05
TOKENS_PER_SECOND_RATIO_MIN = 0.97

# Questions the model answers as asked on both sides: none the desk greets back or prefixes
# with its apology (a complaint), whose first words would be the product's, not the model's
# (tests/bench/test_vs_vllm_report.py checks).
QUESTIONS = [
    "Where is my order? I ordered a blue jacket last week.",
    "How do I return a pair of shoes that do not fit?",
    "Can I change the delivery address of my parcel?",
    "My payment failed but the money left my account. What now?",
    "Do you ship to Canada, and how long does it take?",
    "How can I reset the password of my account?",
    "Do you sell replacement straps for your bags?",
    "What are your opening hours on weekends?",
    "Can I pay by invoice?",
    "I received the wrong size. How do I exchange it?",
    "How do I cancel my subscription?",
    "Is there a discount for students?",
    "My discount code does not work at checkout.",
    "How much does express shipping cost?",
    "Can I pick up my order in a store?",
    "Can I order a gift card for a friend?",
]


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...] = (1, 16)
    rounds: int = 6  # per side and concurrency
    # At 1 chat: one round asks this many, one after another; and the rounds there, if not
    # `rounds`. One question a round alternates the sides answer by answer: a drift of the
    # shared machine's speed then falls on both sides alike.
    questions_in_a_row: int = 4
    one_chat_rounds: int | None = None
    max_tokens: int = 128
    # Both sides. Compiled (torch.compile) is what `make run` serves; eager starts in ~40 s
    # instead of minutes, and its figures are not the compiled ones.
    eager: bool = False
    # A second Daphne on the same worker with these settings (environment variables), measured
    # as one more side in the same alternation: a setting's effect, side by side.
    second_desk: tuple[tuple[str, str], ...] = ()


FULL = Plan(rounds=12, questions_in_a_row=1, one_chat_rounds=24)
QUICK = Plan(rounds=2, questions_in_a_row=2, max_tokens=32, eager=True)
# Before a round: both engines idle (no request running or waiting) for this long, so that
# neither round pays for the tail of the one before.
QUIET_SECONDS = 1.0
# After a round's sockets open and before its first question: the desk's own work for a new
# socket (its conversation prepared, its groups joined) is done by then.
SETTLE_SECONDS = 0.2
QUIET_TIMEOUT = 120.0


@dataclass
class Answer:
    question: str
    sent: float
    first_token: float | None = None
    done: float | None = None
    tokens: int = 0
    text: str = ""
    failure: str = ""


@dataclass
class Results:
    plan: Plan
    system_prompt_tokens: dict = field(default_factory=dict)  # side → prompt tokens seen
    answers: dict = field(default_factory=dict)  # (concurrency, side) → [[Answer] per round]
    same_text: dict = field(default_factory=dict)  # concurrency → (identical, compared)
    others_cpu: float | None = None  # % of one core the rest of the machine used meanwhile
    # (concurrency, side) → [CPU seconds of the side's serving processes, tokens] over its
    # measured rounds: what carrying the tokens from the engine to the client costs.
    serving_cpu: dict = field(default_factory=dict)
    # (concurrency, side) → {process: CPU seconds}: serving_cpu's seconds, process by process.
    serving_parts: dict = field(default_factory=dict)
    model: str = ""  # the model folder both sides served
    # What vLLM's CPU backend read from the environment on both sides (engines.cpu_environment),
    # and the machine's cores: which of them the engines computed on.
    engine_env: dict = field(default_factory=dict)
    cores: int = 0


class Ours:
    """Customer WebSockets at /ws/chat/, as the widget uses them."""

    def __init__(self, port: int, name: str = "ours"):
        self.name = name
        self.url = f"ws://127.0.0.1:{port}/ws/chat/?lang=en"
        self.prompt_tokens: list[int] = []

    async def open(self):
        ws = await connect(self.url, origin=ORIGIN, ping_interval=None, open_timeout=60)
        json.loads(await ws.recv())  # the conversation frame
        return ws

    async def ask(self, ws, question: str) -> Answer:
        answer = Answer(question, time.perf_counter())
        await ws.send(json.dumps({"type": "message", "text": question}))
        try:
            async with asyncio.timeout(300):
                await self._read(ws, answer)
        except TimeoutError:
            answer.failure = "no bot.done within 300 s"
        return answer

    async def _read(self, ws, answer: Answer) -> None:
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "bot.delta" and frame["text"]:
                answer.first_token = answer.first_token or time.perf_counter()
                answer.text += frame["text"]
            elif frame["type"] == "bot.done":
                answer.done = time.perf_counter()
                answer.tokens = frame["usage"]["completion_tokens"]
                if not frame["fallback"]:  # a fallback answer had no prompt
                    self.prompt_tokens.append(frame["usage"]["prompt_tokens"])
                if frame["fallback"] or frame["partial"]:
                    answer.failure = f"{frame['finish_reason']} (fallback)"
                return
            elif frame["type"] in ("error", "handoff.ack"):
                answer.failure = frame.get("code", frame["type"])
                return


class Theirs:
    """vLLM's OpenAI server: streaming chat completions with usage in the last chunk."""

    name = "theirs"

    def __init__(
        self, port: int, model: str, sampling: dict, system_prompt, headers: dict | None = None
    ):
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.model, self.sampling, self.system_prompt = model, sampling, system_prompt
        self.client = httpx.AsyncClient(timeout=300, headers=headers)
        self.prompt_tokens: list[int] = []

    async def open(self):
        return None

    async def ask(self, _conn, question: str) -> Answer:
        # No system prompt from us when the server has its own (the desk's bot profile).
        system = [{"role": "system", "content": self.system_prompt()}] if self.system_prompt else []
        body = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [*system, {"role": "user", "content": question}],
            **self.sampling,
        }
        answer = Answer(question, time.perf_counter())
        async with self.client.stream("POST", self.url, json=body) as response:
            if response.status_code != 200:
                answer.failure = f"HTTP {response.status_code}"
                return answer
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices", []):
                    text = choice.get("delta", {}).get("content") or ""
                    if text:
                        answer.first_token = answer.first_token or time.perf_counter()
                        answer.text += text
                if chunk.get("usage"):
                    answer.tokens = chunk["usage"]["completion_tokens"]
                    self.prompt_tokens.append(chunk["usage"]["prompt_tokens"])
        answer.done = time.perf_counter()
        return answer


def rounds_at(plan: Plan, concurrency: int) -> int:
    if concurrency == 1 and plan.one_chat_rounds is not None:
        return plan.one_chat_rounds
    return plan.rounds


async def one_round(side, concurrency: int, plan: Plan, offset: int) -> list[Answer]:
    """At 1 chat: a few questions one after another, each in a conversation of its own; else
    that many chats at once. Sockets are opened first and settle, so connecting is not timed
    (a browser's widget is connected already)."""
    if concurrency == 1:
        conns = [await side.open() for _ in range(plan.questions_in_a_row)]
        await asyncio.sleep(SETTLE_SECONDS)
        answers = [
            await side.ask(conn, QUESTIONS[(offset + i) % len(QUESTIONS)])
            for i, conn in enumerate(conns)
        ]
        for conn in conns:
            if conn is not None:
                await conn.close()
        return answers
    conns = [await side.open() for _ in range(concurrency)]
    answers = await asyncio.gather(
        *(side.ask(conn, QUESTIONS[(offset + i) % len(QUESTIONS)]) for i, conn in enumerate(conns))
    )
    for conn in conns:
        if conn is not None:
            await conn.close()
    return list(answers)


async def _running(client: httpx.AsyncClient, url: str) -> float:
    """Requests an engine is running or holding (its Prometheus metrics); ours counts its
    worker's active requests as well as vLLM's gauges, which its engine publishes too."""
    names = ("vllm:num_requests_running", "vllm:num_requests_waiting", "cs_worker_active_requests")
    total = 0.0
    for row in (await client.get(url)).text.splitlines():
        if row.startswith(names):
            total += float(row.rsplit(" ", 1)[1])
    return total


async def wait_quiet(metrics_urls: list[str]) -> None:
    """Until every engine has run nothing for QUIET_SECONDS (or QUIET_TIMEOUT passed)."""
    deadline = time.monotonic() + QUIET_TIMEOUT
    quiet_since = None
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            busy = sum([await _running(client, url) for url in metrics_urls])
            now = time.monotonic()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= QUIET_SECONDS:
                return
            await asyncio.sleep(0.2)


async def _all_rounds(
    plan: Plan,
    sides: list,
    metrics_urls: list[str],
    serving: dict,
    serving_cpu: dict,
    serving_parts: dict,
) -> dict:
    """Every round, alternating sides; `serving_cpu` gathers each side's serving CPU and
    tokens, `serving_parts` the same CPU process by process."""
    answers = {}
    theirs = sides[-1]
    bar = tqdm(
        total=(sum(rounds_at(plan, c) for c in plan.concurrency) + 1) * len(sides),
        desc="ours vs vLLM rounds",
        position=0,
    )
    # Unmeasured warm-up on each: first requests pay one-off costs (prefix cache, allocations).
    for side in sides:
        await one_round(side, 2, plan, 0)
        bar.update()
    for concurrency in plan.concurrency:
        for round_no in range(rounds_at(plan, concurrency)):
            asked = plan.questions_in_a_row if concurrency == 1 else concurrency
            for side in sides:
                await wait_quiet(metrics_urls)
                parts_before = _cpu_by_process(serving[side.name])
                answered = await one_round(side, concurrency, plan, round_no * asked)
                parts = serving_parts.setdefault((concurrency, side.name), {})
                for part, seconds in _cpu_by_process(serving[side.name]).items():
                    parts[part] = parts.get(part, 0.0) + seconds - parts_before[part]
                spent = serving_cpu.setdefault((concurrency, side.name), [0.0, 0])
                spent[0] = sum(parts.values())
                spent[1] += sum(a.tokens for a in answered)
                answers.setdefault((concurrency, side.name), []).append(answered)
                bar.update()
        for side in sides[:-1]:
            tqdm.write(
                line(
                    concurrency,
                    answers[(concurrency, side.name)],
                    answers[(concurrency, "theirs")],
                    name=side.name,
                )
            )
        per_token = []
        for side in sides:
            cpu, tokens = serving_cpu[(concurrency, side.name)]
            parts = parts_per_token(serving_parts[(concurrency, side.name)], tokens)
            per_token.append(f"{side.name} {_fmt_ms(ms_per_token(cpu, tokens))} ({parts})")
        tqdm.write(f"  serving CPU per token at {concurrency} chat(s): {', '.join(per_token)}")
    bar.close()
    await theirs.client.aclose()
    return answers


@dataclass
class Processes:
    """Our worker and Daphne, and vLLM's server, on the same model, all ready."""

    port: int  # Daphne's
    second_port: int | None  # the second Daphne's (Plan.second_desk), if any
    vllm_port: int
    metrics_urls: list[str]  # both engines' Prometheus metrics
    sampling: dict
    system_prompt: object  # () -> str: what our consumer renders, to the minute
    all: list  # psutil processes, with their children, for CPU accounting
    # Side → {name: process} of the processes that carry its tokens from the engine to the
    # client, the engine's own processes (children) left out: ours the worker's main process
    # (vLLM's AsyncLLM front end, our loop), Daphne and Redis; theirs the API server (the same
    # AsyncLLM, HTTP).
    serving: dict
    model: str  # the model folder's name
    engine_env: dict  # what both engines' CPU backend read (engines.cpu_environment)


def start_processes(bench: Bench, plan: Plan) -> Processes:
    from django.conf import settings
    from django.utils import timezone

    from chat.prompting import DEFAULT_SYSTEM_PROMPT, render_system_prompt

    cfg = settings.INFERENCE
    sampling = {
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": plan.max_tokens,
        "frequency_penalty": 0.0,
    }
    set_bot_profile(**sampling)
    tqdm.write("  preparing the model (first time: converting it, ~20 s)")
    bench.manage("prepare_model", "--no-progress")
    model_dir = str(cfg["MODEL_DIR"])
    eager = {"INFERENCE_ENFORCE_EAGER": "true" if plan.eager else "false"}
    port, metrics_port, vllm_port = free_port(), free_port(), free_port()
    tqdm.write("  starting our worker (loading the model) and Daphne")
    worker = bench.start(
        "worker",
        [sys.executable, "manage.py", "run_inference_worker"],
        [
            ReadyCheck("worker", f"http://127.0.0.1:{metrics_port}/metrics", WORKER_READY_PATTERN),
        ],
        env={
            "INFERENCE_METRICS_PORT": str(metrics_port),
            "INFERENCE_MODEL_DIR": model_dir,
            **eager,
        },
        timeout=900,
    )
    daphne = bench.daphne(port)
    second_port, desks = None, [daphne]
    if plan.second_desk:
        second_port = free_port()
        desks.append(bench.daphne(second_port, name="daphne-b", env=dict(plan.second_desk)))
    tqdm.write("  starting vLLM's OpenAI server (loading the model)")
    server = bench.start(
        "vllm",
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_dir,
            "--served-model-name",
            "bench",
            "--host",
            "127.0.0.1",
            "--port",
            str(vllm_port),
            "--max-model-len",
            str(cfg["MAX_MODEL_LEN"]),
            "--dtype",
            resolved_dtype(cfg["DTYPE"]),
            # No sampling defaults from the model folder: the same SamplingParams as our worker's.
            "--generation-config",
            "vllm",
            # The engine settings our worker gives vLLM (inference_worker/engines.py): the
            # same slots, step size, KV space and cores on both sides.
            "--max-num-seqs",
            str(cfg["MAX_CONCURRENCY"]),
            *(
                ["--max-num-batched-tokens", str(steps)]
                if (steps := max_batched_tokens(cfg))
                else []
            ),
            *(["--block-size", str(cfg["BLOCK_SIZE"])] if cfg.get("BLOCK_SIZE") else []),
            *(["--enforce-eager"] if plan.eager else []),
        ],
        [ReadyCheck("vllm", f"http://127.0.0.1:{vllm_port}/health")],
        env=cpu_environment(cfg),
        timeout=900,
    )

    def system_prompt() -> str:
        # What our consumer renders for a conversation in English with no site, region or
        # time zone (the default profile's site name), to the minute.
        return render_system_prompt(
            DEFAULT_SYSTEM_PROMPT,
            site_name="our company",
            language="en",
            region="",
            timezone="",
            now=timezone.now(),
        )

    # httpx logs every request at INFO through the settings' root handler: not over the bars.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redis = psutil.Process(bench.redis.pid)
    serving = {
        "ours": {"worker": worker, "Daphne": daphne, "Redis": redis},
        "theirs": {"API server": server},
    }
    if plan.second_desk:
        serving["ours-b"] = {"worker": worker, "Daphne": desks[1], "Redis": redis}
    return Processes(
        port,
        second_port,
        vllm_port,
        [
            f"http://127.0.0.1:{metrics_port}/metrics",
            f"http://127.0.0.1:{vllm_port}/metrics",
        ],
        sampling,
        system_prompt,
        [p for root in (worker, *desks, server) for p in (root, *root.children(recursive=True))],
        serving,
        Path(model_dir).name,
        cpu_environment(cfg),
    )


def stop_processes(bench: Bench) -> None:
    for name in ("vllm", "daphne-b", "daphne", "worker"):
        bench.stop(name)


def run(bench: Bench, plan: Plan) -> Results:
    procs = start_processes(bench, plan)
    ours = Ours(procs.port)
    theirs = Theirs(procs.vllm_port, "bench", procs.sampling, procs.system_prompt)
    sides = [ours, theirs]
    if procs.second_port is not None:
        sides.insert(1, Ours(procs.second_port, name="ours-b"))
    before = _cpu_seconds(procs.all)
    serving_cpu: dict = {}
    serving_parts: dict = {}
    try:
        answers = asyncio.run(
            _all_rounds(plan, sides, procs.metrics_urls, procs.serving, serving_cpu, serving_parts)
        )
        after = _cpu_seconds(procs.all)
    finally:
        stop_processes(bench)
    results = Results(
        plan,
        answers=answers,
        model=procs.model,
        serving_cpu=serving_cpu,
        serving_parts=serving_parts,
        engine_env=procs.engine_env,
        cores=len(os.sched_getaffinity(0)),
    )
    wall = after[0] - before[0]
    results.others_cpu = max(0.0, 100 * ((after[1] - before[1]) - (after[2] - before[2])) / wall)
    results.system_prompt_tokens = {
        "ours": sorted(set(ours.prompt_tokens)),
        "theirs": sorted(set(theirs.prompt_tokens)),
    }
    if results.system_prompt_tokens["ours"] != results.system_prompt_tokens["theirs"]:
        # Not the same prompts: the comparison is off (both render the same system prompt; a
        # minute's turn in it can move a count by one).
        tqdm.write(f"  prompt tokens differ: {results.system_prompt_tokens}")
    for concurrency in plan.concurrency:
        mine = {a.question: a.text for r in answers[(concurrency, "ours")] for a in r}
        other = {a.question: a.text for r in answers[(concurrency, "theirs")] for a in r}
        common = set(mine) & set(other)
        results.same_text[concurrency] = (sum(mine[q] == other[q] for q in common), len(common))
    return results


def ms_per_token(cpu_seconds: float, tokens: int) -> float | None:
    return 1000 * cpu_seconds / tokens if tokens else None


def parts_per_token(parts: dict[str, float], tokens: int) -> str:
    """ "worker 3.10 + Daphne 2.20 + Redis 0.60 ms": a side's serving CPU per token by process."""
    shares = [(name, ms_per_token(seconds, tokens)) for name, seconds in parts.items()]
    if not shares or any(ms is None for _, ms in shares):
        return "–"
    return " + ".join(f"{name} {ms:.2f}" for name, ms in shares) + " ms"


def _fmt_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def _process_cpu(process) -> float:
    """CPU seconds a process has used so far (0 for one that is gone)."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def _cpu_by_process(processes: dict) -> dict[str, float]:
    """{name: CPU seconds so far} of named processes."""
    return {name: _process_cpu(process) for name, process in processes.items()}


def _cpu_seconds(processes) -> tuple[float, float, float]:
    """(now, CPU seconds of the whole machine, CPU seconds of these processes)."""
    mine = sum(_process_cpu(process) for process in processes)
    machine = psutil.cpu_times()
    return time.monotonic(), sum(machine) - machine.idle - machine.iowait, mine


def summarize(rounds: list[list[Answer]]) -> dict:
    answers = [a for r in rounds for a in r]
    good = [a for a in answers if not a.failure and a.first_token is not None]
    busy = sum(busy_time([(a.sent, a.done) for a in r if a.done is not None]) for r in rounds)
    tokens = sum(a.tokens for a in good)
    return {
        "answers": len(answers),
        "failed": len(answers) - len(good),
        "failures": dict(Counter(a.failure or "no text" for a in answers if a not in good)),
        "first_token_ms": p50_p99([(a.first_token - a.sent) * 1000 for a in good]),
        "tokens_per_second": tokens / busy if busy else None,
        "mean_tokens": tokens / len(good) if good else None,
    }


def comparison(ours: dict, theirs: dict) -> dict:
    def ratio(a, b):
        return a / b if a is not None and b else None

    return {
        "first_token_p50_ratio": ratio(
            ours["first_token_ms"]["p50"], theirs["first_token_ms"]["p50"]
        ),
        "first_token_p99_ratio": ratio(
            ours["first_token_ms"]["p99"], theirs["first_token_ms"]["p99"]
        ),
        "tokens_per_second_ratio": ratio(ours["tokens_per_second"], theirs["tokens_per_second"]),
    }


def spread(ours_rounds, theirs_rounds) -> dict:
    """The ratios round by round (round i of ours against round i of theirs, which ran next to
    it), as (lowest, highest): how far one round's figure may stray from the whole run's."""
    per_round = [
        comparison(summarize([mine]), summarize([other]))
        for mine, other in zip(ours_rounds, theirs_rounds, strict=True)
    ]

    def low_high(key):
        values = [r[key] for r in per_round if r[key] is not None]
        return (min(values), max(values)) if values else (None, None)

    return {
        "first_token_p50_ratio": low_high("first_token_p50_ratio"),
        "tokens_per_second_ratio": low_high("tokens_per_second_ratio"),
    }


def verdicts(compared: dict) -> dict[str, bool]:
    p50, tps = compared["first_token_p50_ratio"], compared["tokens_per_second_ratio"]
    return {
        f"first token p50 ≤ {FIRST_TOKEN_RATIO_MAX}×": p50 is not None
        and p50 <= FIRST_TOKEN_RATIO_MAX,
        f"tokens/s ≥ {TOKENS_PER_SECOND_RATIO_MIN}×": tps is not None
        and tps >= TOKENS_PER_SECOND_RATIO_MIN,
    }


def line(concurrency: int, ours_rounds, theirs_rounds, name: str = "ours") -> str:
    ours, theirs = summarize(ours_rounds), summarize(theirs_rounds)
    compared = comparison(ours, theirs)
    rounds = spread(ours_rounds, theirs_rounds)
    marks = ", ".join(f"{k}: {'met' if ok else 'MISSED'}" for k, ok in verdicts(compared).items())

    def side(s):
        ft = s["first_token_ms"]
        return (
            f"first token p50 {ft['p50'] or 0:.0f} / p99 {ft['p99'] or 0:.0f} ms, "
            f"{s['tokens_per_second'] or 0:.1f} tok/s"
        )

    def low_high(key):
        low, high = rounds[key]
        return f"{low or 0:.2f}-{high or 0:.2f}"

    return (
        f"  {concurrency:>2} chat(s): {name} {side(ours)} | vLLM {side(theirs)} | ratio "
        f"first token {compared['first_token_p50_ratio'] or 0:.2f}× (rounds "
        f"{low_high('first_token_p50_ratio')}), tok/s "
        f"{compared['tokens_per_second_ratio'] or 0:.2f}× (rounds "
        f"{low_high('tokens_per_second_ratio')}) | {marks}"
    )
