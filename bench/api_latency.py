"""Part 3: what the HTTP API adds to the first token, on the real model.

Four ways to ask the same questions, interleaved round by round in one run so a slow minute
of the machine falls on all of them:

- the widget's socket (/ws/chat/), the path the chat API rides on;
- the chat API streaming (`POST /api/v1/chat`, Server-Sent Events);
- the desk's OpenAI-compatible endpoint (`/v1/chat/completions`, streaming);
- vLLM's own OpenAI server on the same model and sampling.

Figures: first token p50/p99 of each, and two ratios: the chat API over the socket, and the
desk's OpenAI-compatible endpoint over vLLM's.
"""

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
from tqdm import tqdm

from bench.processes import Bench
from bench.stats import p50_p99
from bench.vs_vllm import (
    Answer,
    Ours,
    Plan,
    Theirs,
    one_round,
    start_processes,
    stop_processes,
)

FULL = Plan(concurrency=(1,), rounds=5, questions_in_a_row=4)
QUICK = Plan(concurrency=(1,), rounds=2, questions_in_a_row=2, max_tokens=32)
SIDES = ("socket", "chat API", "desk /v1", "vLLM /v1")


class ChatApi:
    """`POST /api/v1/chat` with stream: true, a new session per question (like a new chat on
    the socket side)."""

    name = "chat API"

    def __init__(self, port: int, secret: str):
        self.url = f"http://127.0.0.1:{port}/api/v1/chat"
        self.client = httpx.AsyncClient(timeout=300, headers={"Authorization": f"Bearer {secret}"})
        self.sessions = 0

    async def open(self):
        return None

    async def ask(self, _conn, question: str) -> Answer:
        self.sessions += 1
        answer = Answer(question, time.perf_counter())
        body = {"session_id": f"bench-{self.sessions}", "user_input": question, "stream": True}
        async with self.client.stream("POST", self.url, json=body) as response:
            if response.status_code != 200:
                answer.failure = f"HTTP {response.status_code}"
                return answer
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                frame = json.loads(line[6:])
                if frame["type"] == "bot.delta" and frame["text"]:
                    answer.first_token = answer.first_token or time.perf_counter()
                    answer.text += frame["text"]
                elif frame["type"] == "bot.done":
                    answer.tokens = frame["usage"]["completion_tokens"]
                    if frame["fallback"] or frame["partial"]:
                        answer.failure = f"{frame['finish_reason']} (fallback)"
        answer.done = time.perf_counter()
        return answer


@dataclass
class Results:
    plan: Plan
    answers: dict = field(default_factory=dict)  # side → [[Answer] per round]


def _create_key(bench: Bench) -> str:
    import subprocess
    import sys

    from bench.processes import ROOT

    out = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "create_api_key",
            "--name",
            "bench",
            "--scopes",
            "chat,openai",
            "--rpm",
            "0",
            "--tokens-per-day",
            "0",
        ],
        cwd=ROOT,
        env=bench.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def run(bench: Bench, plan: Plan) -> Results:
    from chat.api.openai import model_name

    procs = start_processes(bench, plan)
    secret = _create_key(bench)
    socket = Ours(procs.port)
    socket.name = "socket"
    chat_api = ChatApi(procs.port, secret)
    desk_v1 = Theirs(
        procs.port,
        model_name(),
        procs.sampling,
        None,
        headers={"Authorization": f"Bearer {secret}"},
    )
    desk_v1.name = "desk /v1"
    vllm_v1 = Theirs(procs.vllm_port, "bench", procs.sampling, procs.system_prompt)
    vllm_v1.name = "vLLM /v1"
    sides = (socket, chat_api, desk_v1, vllm_v1)
    try:
        answers = asyncio.run(_rounds(plan, sides))
    finally:
        stop_processes(bench)
    return Results(plan, answers)


async def _rounds(plan: Plan, sides) -> dict:
    answers: dict = {}
    bar = tqdm(total=(plan.rounds + 1) * len(sides), desc="API latency rounds", position=0)
    for side in sides:  # unmeasured warm-up
        await one_round(side, 1, plan, 0)
        bar.update()
    for round_no in range(plan.rounds):
        for side in sides:
            answers.setdefault(side.name, []).append(
                await one_round(side, 1, plan, round_no * plan.questions_in_a_row)
            )
            bar.update()
            await asyncio.sleep(1)
    bar.close()
    for side in sides:
        client = getattr(side, "client", None)
        if client is not None:
            await client.aclose()
    return answers


def data(results: Results) -> dict:
    rows = {}
    for name in SIDES:
        answers = [a for r in results.answers.get(name, []) for a in r]
        good = [a for a in answers if not a.failure and a.first_token is not None]
        rows[name] = {
            "answers": len(answers),
            "failed": len(answers) - len(good),
            "first_token_ms": p50_p99([(a.first_token - a.sent) * 1000 for a in good]),
        }

    def ratio(a: str, b: str):
        x, y = rows[a]["first_token_ms"]["p50"], rows[b]["first_token_ms"]["p50"]
        return x / y if x is not None and y else None

    return {
        "rows": rows,
        "chat_api_over_socket": ratio("chat API", "socket"),
        "desk_v1_over_vllm": ratio("desk /v1", "vLLM /v1"),
    }


def lines(figures: dict) -> list[str]:
    out = []
    for name, row in figures["rows"].items():
        ft = row["first_token_ms"]
        out.append(
            f"  {name:<9} first token p50 {ft['p50'] or 0:.0f} ms, p99 "
            f"{ft['p99'] or 0:.0f} ms ({row['answers']} answers, {row['failed']} failed)"
        )
    for label, key in (
        ("chat API over the socket", "chat_api_over_socket"),
        ("desk /v1 over vLLM's /v1", "desk_v1_over_vllm"),
    ):
        value = figures[key]
        out.append(
            f"  {label}: {value:.2f}× first token p50" if value is not None else f"  {label}: n/a"
        )
    return out
