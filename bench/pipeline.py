"""Part 1: the pipeline alone, against ONE Daphne process.

The answers come from the synthetic worker (bench/synthetic_worker.py) at the real model's
delta rate, with slots for every stream (no admission control kicks in), so what is measured
is Daphne, Channels and Redis, not the model. The customers run in a separate process
(bench/loadgen.py).
"""

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil
from tqdm import tqdm

from bench.processes import ROOT, Bench, free_port, set_bot_profile
from bench.sampling import Sampler
from devstack.stack import WORKER_READY_PATTERN, ReadyCheck

# From the project's issue.
SAFE_STREAMS = 250  # up to this many streams: nothing lost or failed
BUSY_WITHIN_MS = 2000  # above it, overflow only as explicit "busy" answers within 2 s
LAG_TARGET_MS = 100  # p99 added delta lag at SAFE_STREAMS

# ~25 deltas a second per stream, like the real model (20-30 tokens/s): the synthetic words
# " word100" are 8 characters, so at 200 characters per second one is due every 40 ms.
CHARS_PER_SECOND = 200.0


@dataclass(frozen=True)
class Plan:
    idle_steps: tuple[int, ...]
    stream_steps: tuple[int, ...]
    words: int  # words in every answer: 300 stream for ~11 s
    arrivals_per_second: float = 100.0  # new messages a second while a step starts
    idle_window: float = 5.0  # seconds over which idle CPU is measured
    settle: float = 3.0  # seconds between steps for the last one's sockets to go


FULL = Plan(
    idle_steps=(500, 1000, 2000, 4000), stream_steps=(50, 100, 200, 250, 300, 400), words=300
)
QUICK = Plan(idle_steps=(50, 200), stream_steps=(10, 40), words=60, idle_window=2, settle=1)


@dataclass
class Results:
    plan: Plan
    chars_per_second: float
    answer_seconds: float
    idle: list[dict] = field(default_factory=list)
    streams: list[dict] = field(default_factory=list)
    baseline_rss_mb: float = 0.0
    pinned: bool = False  # Daphne on a core of its own (see _pin)


class LoadGenerator:
    """bench/loadgen.py in its own process, driven one JSON command per line."""

    def __init__(self, url: str, redis_url: str, env: dict, log):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", url, redis_url],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )

    def command(self, command: dict, label: str, on_event=None) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        bar = None
        try:
            for line in self.process.stdout:
                message = json.loads(line)
                if "result" in message:
                    return message["result"]
                if "event" in message and on_event is not None:
                    on_event(message["event"])
                if "progress" in message:
                    desc = f"{label}: {message['what']}"
                    if bar is None or bar.desc != desc:
                        if bar is not None:
                            bar.close()
                        bar = tqdm(total=message["total"], desc=desc, leave=False, position=1)
                    bar.n = message["progress"]
                    bar.refresh()
        finally:
            if bar is not None:
                bar.close()
        raise RuntimeError("the load generator ended early; see var/bench/bench.log")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write('{"cmd": "quit"}\n')
            self.process.stdin.flush()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def run(bench: Bench, plan: Plan) -> Results:
    from bench.synthetic import answer_text, schedule

    text = answer_text(plan.words)
    results = Results(plan, CHARS_PER_SECOND, schedule(text, CHARS_PER_SECOND)[-1])
    # The synthetic engine counts one token per character: the whole answer must fit, and the
    # answer limit (the length guard) must not cut its 300 words: what is measured is the
    # pipeline, and a cut answer would differ from the text each delta is checked against.
    set_bot_profile(max_tokens=len(text) + 100, answer_max_words=plan.words + 100)
    port, metrics_port = free_port(), free_port()
    worker = bench.start(
        "worker",
        [
            sys.executable,
            "-m",
            "bench.synthetic_worker",
            "--words",
            str(plan.words),
            "--chars-per-second",
            str(CHARS_PER_SECOND),
            "--max-concurrency",
            "1000",
            "--metrics-port",
            str(metrics_port),
        ],
        [ReadyCheck("worker", f"http://127.0.0.1:{metrics_port}/metrics", WORKER_READY_PATTERN)],
    )
    daphne = bench.daphne(port)
    time.sleep(1)
    loadgen = LoadGenerator(
        f"ws://127.0.0.1:{port}/ws/chat/?lang=en", bench.redis.url, bench.env, bench.sup.out
    )
    redis, load = psutil.Process(bench.redis.pid), psutil.Process(loadgen.process.pid)
    all_cores = psutil.Process().cpu_affinity()
    results.pinned = _pin(daphne, [worker, redis, load, psutil.Process()])
    sampler = Sampler(
        {"daphne": daphne, "worker": worker, "redis": redis, "loadgen": load},
        redis_url=bench.redis.url,
    )
    results.baseline_rss_mb = sampler.rss_mb("daphne")
    steps = tqdm(total=len(plan.idle_steps) + len(plan.stream_steps), desc="pipeline", position=0)
    try:
        for total in plan.idle_steps:
            results.idle.append(_idle_step(loadgen, sampler, plan, total))
            tqdm.write(_idle_line(results.idle[-1]))
            steps.update()
        loadgen.command({"cmd": "close_idle"}, "closing idle sockets")
        time.sleep(plan.settle)
        for streams in plan.stream_steps:
            results.streams.append(
                _stream_step(loadgen, sampler, plan, streams, results.answer_seconds)
            )
            tqdm.write(_stream_line(results.streams[-1]))
            steps.update()
            results.streams[-1]["drain_seconds"] = _drain(sampler, plan)
    finally:
        steps.close()
        psutil.Process().cpu_affinity(all_cores)  # what the bench starts next gets them all
        loadgen.close()
        sampler.close()
        bench.stop("daphne")
        bench.stop("worker")
    return results


def _pin(daphne: psutil.Process, others: list[psutil.Process]) -> bool:
    """Daphne on a core of its own, everything else of the bench on the others.

    What is measured is one Daphne process, and in production it has a core to itself (one
    process per core behind nginx, the model on its own machine). Left to share, the load
    generator (which reads every frame Daphne writes), the synthetic worker and Redis take
    Daphne's core from it at random moments, and the delay measured is theirs: on 2 cores,
    unpinned, p99 delta lag at 250 steady streams was 176 ms against 61 ms pinned (same
    code, same machine). False where the machine has one core (nothing pinned)."""
    cores = sorted(psutil.Process().cpu_affinity())
    if len(cores) < 2:
        return False
    daphne.cpu_affinity(cores[:1])
    for process in others:
        process.cpu_affinity(cores[1:])
    return True


def _drain(sampler: Sampler, plan: Plan, limit: float = 180) -> float:
    """Wait until Daphne has read what the last step left in Redis for it, so that the next
    step starts clean; how long that took (an overloaded step leaves a backlog behind)."""
    started = time.monotonic()
    time.sleep(plan.settle)
    with tqdm(desc="  waiting for Daphne to read its backlog", leave=False, position=1) as bar:
        while time.monotonic() - started < limit:
            backlog = sampler.backlog()
            bar.set_postfix_str(f"{backlog:,} messages")
            if backlog < 10:
                break
            time.sleep(1)
    return time.monotonic() - started


def _idle_step(loadgen: LoadGenerator, sampler: Sampler, plan: Plan, total: int) -> dict:
    result = loadgen.command({"cmd": "idle", "total": total}, f"{total} idle sockets")
    time.sleep(1)  # the pings' work is done; measure the sockets doing nothing
    start = sampler.mark()
    time.sleep(plan.idle_window)
    cpu = Sampler.cpu_percent(start, sampler.mark())
    return {
        **result,
        "target": total,
        "daphne_cpu": cpu["daphne"],
        "daphne_rss_mb": sampler.rss_mb("daphne"),
        "machine_cpu": cpu["machine"],
    }


def _stream_step(
    loadgen: LoadGenerator, sampler: Sampler, plan: Plan, streams: int, answer_seconds: float
) -> dict:
    marks = {}
    spread = streams / plan.arrivals_per_second
    sampler.reset_peak()
    result = loadgen.command(
        {
            "cmd": "stream",
            "n": streams,
            "spread": spread,
            "words": plan.words,
            "cps": CHARS_PER_SECOND,
            "timeout": spread + answer_seconds + 40,
        },
        f"{streams} streams",
        on_event=lambda event: marks.setdefault(event, sampler.mark()),
    )
    cpu = Sampler.cpu_percent(marks["sending"], marks["answered"])
    return {
        **result,
        "spread_seconds": spread,
        "window_seconds": marks["answered"].at - marks["sending"].at,
        "daphne_cpu": cpu["daphne"],
        "worker_cpu": cpu["worker"],
        "redis_cpu": cpu["redis"],
        "loadgen_cpu": cpu["loadgen"],
        "machine_cpu": cpu["machine"],
        "daphne_peak_rss_mb": sampler.peak_rss_mb("daphne"),
        "peak_backlog": sampler.peak_backlog,
        "frames_per_second": result["deltas_received"]
        / max(1e-9, marks["answered"].at - marks["sending"].at),
    }


def verdicts(step: dict) -> dict[str, bool]:
    """Which of the issue's targets this streaming step meets (those that apply to it)."""
    checks = {}
    if step["streams"] <= SAFE_STREAMS:
        checks["0 lost/failed"] = step["lost"] + step["failed"] + step["wrong"] + step["busy"] == 0
    else:
        checks[f"overflow only as busy within {BUSY_WITHIN_MS / 1000:g} s"] = (
            step["lost"] + step["failed"] + step["wrong"] == 0
            and (step["busy_max_ms"] or 0) <= BUSY_WITHIN_MS
        )
    if step["streams"] == SAFE_STREAMS:
        # At 250 streams: while all of them stream (not while they are still starting).
        p99 = (step.get("delta_lag_all_streaming_ms") or {}).get("p99")
        checks[f"p99 delta lag while all stream ≤ {LAG_TARGET_MS} ms"] = (
            p99 is not None and p99 <= LAG_TARGET_MS
        )
    return checks


def _ms(value) -> str:
    return "–" if value is None else f"{value:.0f}"


def _idle_line(step: dict) -> str:
    return (
        f"  {step['sockets']:>5} idle sockets: {step['answered_ping']} answer a ping "
        f"(pong p50 {_ms(step['pong_ms']['p50'])} ms, p99 {_ms(step['pong_ms']['p99'])} ms), "
        f"{step['silent']} silent | Daphne CPU {step['daphne_cpu']:.1f} %, "
        f"RSS {step['daphne_rss_mb']:.0f} MB"
    )


def _stream_line(step: dict) -> str:
    marks = ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in verdicts(step).items())
    return (
        f"  {step['streams']:>4} streams: {step['exact']} exact, {step['lost']} lost, "
        f"{step['failed'] + step['wrong']} failed, {step['busy']} busy | first token p50 "
        f"{_ms(step['first_token_ms']['p50'])} / p99 {_ms(step['first_token_ms']['p99'])} ms"
        f" | delta lag p50 {_ms(step['delta_lag_ms']['p50'])} / p99 "
        f"{_ms(step['delta_lag_ms']['p99'])} ms (all streaming: p99 "
        f"{_ms((step.get('delta_lag_all_streaming_ms') or {}).get('p99'))} ms) | "
        f"Daphne CPU {step['daphne_cpu']:.0f} %, "
        f"RSS {step['daphne_peak_rss_mb']:.0f} MB | {marks}"
    )
