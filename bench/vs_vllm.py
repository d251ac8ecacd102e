"""Part 2: the whole stack (Daphne + the real worker with the real model) against vLLM's own
OpenAI server on the same model, prompts and sampling.

Both run on this machine at the same time but are loaded in turn: rounds alternate (ours,
theirs, ours, theirs, ...) so that a slow minute of the machine falls on both. Greedy sampling
(temperature 0, top_p 1) with the same max_tokens: both produce the same answers, give or take
bf16 batch numerics, hence about the same token counts; the counts are reported to show it.
"""

import asyncio
import json
import logging
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
from inference_worker.engines import resolved_dtype

# From the project's issue.
FIRST_TOKEN_RATIO_MAX = 1.05
TOKENS_PER_SECOND_RATIO_MIN = 0.97

QUESTIONS = [
    "Where is my order? I ordered a blue jacket last week.",
    "How do I return a pair of shoes that do not fit?",
    "Can I change the delivery address of my parcel?",
    "My payment failed but the money left my account. What now?",
    "Do you ship to Canada, and how long does it take?",
    "How can I reset the password of my account?",
    "The zipper of my new bag is broken. Can I get a replacement?",
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
    rounds: int = 5  # per side and concurrency
    questions_in_a_row: int = 4  # at 1 chat: one round asks this many, one after another
    max_tokens: int = 96
    eager: bool = True  # both sides; without torch.compile both start in ~20 s instead of ~60+


FULL = Plan()
QUICK = Plan(rounds=2, questions_in_a_row=2, max_tokens=32)


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
    model: str = ""  # the model folder both sides served


class Ours:
    """Customer WebSockets at /ws/chat/, as the widget uses them."""

    name = "ours"

    def __init__(self, port: int):
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


async def one_round(side, concurrency: int, plan: Plan, offset: int) -> list[Answer]:
    """At 1 chat: a few questions one after another; else that many chats at once. Sockets
    are opened first, so connecting is not timed (a browser's widget is connected already)."""
    if concurrency == 1:
        answers = []
        for i in range(plan.questions_in_a_row):
            conn = await side.open()
            answers.append(await side.ask(conn, QUESTIONS[(offset + i) % len(QUESTIONS)]))
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


async def _all_rounds(plan: Plan, ours: Ours, theirs: Theirs) -> dict:
    answers = {}
    bar = tqdm(
        total=len(plan.concurrency) * plan.rounds * 2 + 2, desc="ours vs vLLM rounds", position=0
    )
    # Unmeasured warm-up on both: first requests pay one-off costs (prefix cache, allocations).
    for side in (ours, theirs):
        await one_round(side, 2, plan, 0)
        bar.update()
    for concurrency in plan.concurrency:
        for round_no in range(plan.rounds):
            for side in (ours, theirs):
                answers.setdefault((concurrency, side.name), []).append(
                    await one_round(side, concurrency, plan, round_no * concurrency)
                )
                bar.update()
                await asyncio.sleep(1)  # let the engine that just ran go idle
        tqdm.write(
            line(concurrency, answers[(concurrency, "ours")], answers[(concurrency, "theirs")])
        )
    bar.close()
    await theirs.client.aclose()
    return answers


@dataclass
class Processes:
    """Our worker and Daphne, and vLLM's server, on the same model, all ready."""

    port: int  # Daphne's
    vllm_port: int
    sampling: dict
    system_prompt: object  # () -> str: what our consumer renders, to the minute
    all: list  # psutil processes, with their children, for CPU accounting
    model: str  # the model folder's name


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
            *(["--enforce-eager"] if plan.eager else []),
        ],
        [ReadyCheck("vllm", f"http://127.0.0.1:{vllm_port}/health")],
        env={"VLLM_CPU_KVCACHE_SPACE": str(cfg["CPU_KVCACHE_SPACE_GIB"])},
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
    return Processes(
        port,
        vllm_port,
        sampling,
        system_prompt,
        [p for root in (worker, daphne, server) for p in (root, *root.children(recursive=True))],
        Path(model_dir).name,
    )


def stop_processes(bench: Bench) -> None:
    for name in ("vllm", "daphne", "worker"):
        bench.stop(name)


def run(bench: Bench, plan: Plan) -> Results:
    procs = start_processes(bench, plan)
    ours = Ours(procs.port)
    theirs = Theirs(procs.vllm_port, "bench", procs.sampling, procs.system_prompt)
    before = _cpu_seconds(procs.all)
    try:
        answers = asyncio.run(_all_rounds(plan, ours, theirs))
        after = _cpu_seconds(procs.all)
    finally:
        stop_processes(bench)
    results = Results(plan, answers=answers, model=procs.model)
    wall = after[0] - before[0]
    results.others_cpu = max(0.0, 100 * ((after[1] - before[1]) - (after[2] - before[2])) / wall)
    results.system_prompt_tokens = {
        "ours": sorted(set(ours.prompt_tokens)),
        "theirs": sorted(set(theirs.prompt_tokens)),
    }
    for concurrency in plan.concurrency:
        mine = {a.question: a.text for r in answers[(concurrency, "ours")] for a in r}
        other = {a.question: a.text for r in answers[(concurrency, "theirs")] for a in r}
        common = set(mine) & set(other)
        results.same_text[concurrency] = (sum(mine[q] == other[q] for q in common), len(common))
    return results


def _cpu_seconds(processes) -> tuple[float, float, float]:
    """(now, CPU seconds of the whole machine, CPU seconds of these processes)."""
    mine = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            mine += times.user + times.system
        except psutil.Error:
            pass
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


def verdicts(compared: dict) -> dict[str, bool]:
    p50, tps = compared["first_token_p50_ratio"], compared["tokens_per_second_ratio"]
    return {
        f"first token p50 ≤ {FIRST_TOKEN_RATIO_MAX}×": p50 is not None
        and p50 <= FIRST_TOKEN_RATIO_MAX,
        f"tokens/s ≥ {TOKENS_PER_SECOND_RATIO_MIN}×": tps is not None
        and tps >= TOKENS_PER_SECOND_RATIO_MIN,
    }


def line(concurrency: int, ours_rounds, theirs_rounds) -> str:
    ours, theirs = summarize(ours_rounds), summarize(theirs_rounds)
    compared = comparison(ours, theirs)
    marks = ", ".join(f"{k}: {'met' if ok else 'MISSED'}" for k, ok in verdicts(compared).items())

    def side(s):
        ft = s["first_token_ms"]
        return (
            f"first token p50 {ft['p50'] or 0:.0f} / p99 {ft['p99'] or 0:.0f} ms, "
            f"{s['tokens_per_second'] or 0:.1f} tok/s"
        )

    return (
        f"  {concurrency:>2} chat(s): ours {side(ours)} | vLLM {side(theirs)} | ratio "
        f"first token {compared['first_token_p50_ratio'] or 0:.2f}×, tok/s "
        f"{compared['tokens_per_second_ratio'] or 0:.2f}× | {marks}"
    )
