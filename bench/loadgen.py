"""`python -m bench.loadgen URL REDIS_URL`: the pipeline benchmark's customers, in a process of
their own so that they do not share Daphne's CPU time slice or event loop.

It takes one JSON command per line on stdin and answers on stdout with progress lines
(`{"progress": n, "total": t, "what": ...}`), events (`{"event": "sending"}`, `{"event":
"answered"}`, which the driver uses to time its CPU window) and one `{"result": {...}}`.

Commands:
- `{"cmd": "idle", "total": N}`: open idle customer sockets until N are open (the ones opened
  before stay), then ping every one of them: are they all still connected and answering?
- `{"cmd": "close_idle"}`: close them.
- `{"cmd": "stream", "n": N, "spread": S, "words": W, "cps": C, "timeout": T}`: N new customer
  sockets each send one message (spread evenly over S seconds) and read the answer to its
  end; every answer is checked against the synthetic text and every delta timed.
"""

import asyncio
import bisect
import gc
import json
import resource
import sys
import time
import uuid
from collections import Counter

import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from bench.stats import p50_p99, percentile
from bench.synthetic import STARTS_KEY, answer_text, message_for, piece_ends, schedule

ORIGIN = "http://127.0.0.1"
CONNECTS_IN_FLIGHT = 50  # handshakes at once: each one creates a conversation in the database
PINGS_IN_FLIGHT = 100


def emit(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Progress:
    """Progress lines at most every 0.2 s: one per item would cost the driver more than it
    measures."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done, self.shown_at = what, total, 0, 0.0
        emit(progress=0, total=total, what=what)

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.shown_at > 0.2 or self.done == self.total:
            self.shown_at = now
            emit(progress=self.done, total=self.total, what=self.what)


class LoopLag:
    """How late this process's own event loop wakes up: the part of every measured delay
    that is the load generator's, not the product's."""

    def __init__(self):
        self.samples: list[float] = []
        self.task: asyncio.Task | None = None

    def __enter__(self):
        self.samples.clear()
        self.task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc):
        self.task.cancel()

    async def _tick(self):
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.samples.append((time.monotonic() - before - 0.01) * 1000)


async def open_socket(url: str):
    ws = await connect(
        url, origin=ORIGIN, ping_interval=None, open_timeout=60, close_timeout=2, max_queue=None
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if first.get("type") != "conversation":
        await ws.close()
        raise RuntimeError(f"expected a conversation frame, got {first}")
    return ws


async def open_many(url: str, count: int, what: str) -> tuple[list, Counter]:
    progress, sockets, errors = Progress(what, count), [], Counter()
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def one():
        async with gate:
            try:
                sockets.append(await open_socket(url))
            except Exception as exc:  # noqa: BLE001  every failure is counted and reported
                errors[type(exc).__name__] += 1
            progress.step()

    await asyncio.gather(*(one() for _ in range(count)))
    return sockets, errors


async def close_all(sockets: list) -> None:
    async def one(ws):
        try:
            await ws.close()
        except Exception:  # noqa: BLE001  closing what is broken already
            pass

    await asyncio.gather(*(one(ws) for ws in sockets))


async def ping_all(sockets: list) -> tuple[list[float], int]:
    """Pong latencies (ms) of the sockets that answered, and how many did not."""
    progress, latencies, silent = Progress("pinging every socket", len(sockets)), [], 0
    gate = asyncio.Semaphore(PINGS_IN_FLIGHT)

    async def one(ws):
        nonlocal silent
        async with gate:
            sent = time.monotonic()
            try:
                await ws.send('{"type": "ping"}')
                async with asyncio.timeout(10):
                    while json.loads(await ws.recv()).get("type") != "pong":
                        pass
                latencies.append((time.monotonic() - sent) * 1000)
            except Exception:  # noqa: BLE001  closed, timed out: it did not answer
                silent += 1
            progress.step()

    await asyncio.gather(*(one(ws) for ws in sockets))
    return latencies, silent


class Conversation:
    """One customer: sends one message, reads every frame until the answer has ended."""

    def __init__(self, ws):
        self.ws = ws
        self.tag = uuid.uuid4().hex[:16]
        self.sent_at = 0.0
        self.messages: dict[int, dict] = {}  # bot message id → {"deltas": [(t, text)], "done"}
        self.errors: list[str] = []
        self.ended = False

    async def run(self, delay: float, give_up_after: float) -> None:
        await asyncio.sleep(delay)
        self.sent_at = time.time()
        await self.ws.send(
            json.dumps({"type": "message", "text": message_for(self.tag), "client_id": self.tag})
        )
        try:
            async with asyncio.timeout(give_up_after):
                await self._read()
        except TimeoutError:
            pass
        except Exception as exc:  # noqa: BLE001  a dropped socket is a failed answer
            self.errors.append(type(exc).__name__)

    async def _read(self) -> None:
        partial_seen = None
        while True:
            wait = None if partial_seen is None else max(0.0, partial_seen + 5 - time.time())
            try:
                raw = await asyncio.wait_for(self.ws.recv(), wait)
            except TimeoutError:
                self.ended = True  # a cut-off answer with no fallback after it
                return
            now, frame = time.time(), json.loads(raw)
            kind = frame.get("type") or ""
            if kind == "error":
                self.errors.append(frame.get("code", "error"))
                return
            if not kind.startswith("bot."):
                continue
            message = self.messages.setdefault(frame["message_id"], {"deltas": [], "done": None})
            if kind == "bot.delta":
                message["deltas"].append((now, frame["text"]))
            elif kind == "bot.done":
                message["done"] = {**frame, "at": now}
                if frame["fallback"] or not frame["partial"]:
                    self.ended = True
                    return
                partial_seen = now  # a fallback answer may follow (busy, error)

    def outcome(self, expected: str) -> tuple[str, str]:
        """(exact | wrong | busy | failed | lost, reason)."""
        dones = [m["done"] for m in self.messages.values() if m["done"] is not None]
        fallback = next((d for d in dones if d["fallback"]), None)
        if fallback is not None:
            reason = fallback["finish_reason"]
            return ("busy" if reason == "busy" else "failed"), reason
        if self.errors:
            return "failed", self.errors[0]
        answer = self.answer()
        if answer is None or not self.ended:
            return "lost", "no bot.done in time"
        if answer["done"]["partial"]:
            return "failed", answer["done"]["finish_reason"]
        text = "".join(text for _, text in answer["deltas"])
        if text == expected:
            return "exact", ""
        return "wrong", "streamed text differs: " + _difference(text, expected)

    def answer(self) -> dict | None:
        return next(
            (
                m
                for m in self.messages.values()
                if m["done"] is not None and not m["done"]["fallback"]
            ),
            None,
        )

    def first_token_ms(self) -> float | None:
        answer = next(
            (
                m
                for m in self.messages.values()
                if m["deltas"] and not (m["done"] or {}).get("fallback")
            ),
            None,
        )
        return None if answer is None else (answer["deltas"][0][0] - self.sent_at) * 1000

    def busy_ms(self) -> float | None:
        busy = next(
            (m["done"] for m in self.messages.values() if m["done"] and m["done"]["fallback"]), None
        )
        return None if busy is None else (busy["at"] - self.sent_at) * 1000

    def delta_lags_ms(
        self, started: float, ends: list[int], due: list[float]
    ) -> list[tuple[float, float]]:
        """For each delta: when it arrived, and its arrival minus when the engine produced
        its last word (ms)."""
        lags, position = [], 0
        for arrived, text in self.answer()["deltas"]:
            position += len(text)
            word = min(bisect.bisect_left(ends, position), len(ends) - 1)
            lags.append((arrived, (arrived - (started + due[word])) * 1000))
        return lags


def _difference(text: str, expected: str) -> str:
    """Where a streamed text first differs from the expected one, for the report."""
    at = next(
        (i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b),
        min(len(text), len(expected)),
    )
    if len(text) < len(expected) and expected.startswith(text):
        return f"ends early (missing the last {len(expected) - len(text)} characters)"
    if len(text) > len(expected) and text.startswith(expected):
        return f"{len(text) - len(expected)} characters too many at the end"
    return f"from character {at}: {text[at : at + 20]!r} instead of {expected[at : at + 20]!r}"


async def stream(
    url: str, redis_url: str, n: int, spread: float, words: int, cps: float, give_up_after: float
) -> dict:
    expected = answer_text(words)
    ends, due = piece_ends(expected), schedule(expected, cps)
    sockets, connect_errors = await open_many(url, n, "connecting customers")
    conversations = [Conversation(ws) for ws in sockets]
    progress = Progress("streaming answers", len(conversations))

    async def converse(index: int, conversation: Conversation) -> None:
        await conversation.run(index * spread / max(1, n), give_up_after)
        progress.step()

    emit(event="sending")
    # No garbage collection here while answers stream: with thousands of sockets behind it,
    # one full collection stalled this process for 0.15-0.22 s, and every delta that arrived
    # meanwhile would have been counted as the product's lag. Collected after the step.
    gc.disable()
    try:
        with LoopLag() as loop_lag:
            await asyncio.gather(*(converse(i, c) for i, c in enumerate(conversations)))
    finally:
        gc.enable()
    emit(event="answered")
    await close_all(sockets)

    outcomes, reasons = Counter(), Counter()
    first_tokens, lags, busy_ms = [], [], []
    exact = []
    for conversation in conversations:
        outcome, reason = conversation.outcome(expected)
        outcomes[outcome] += 1
        if reason:
            reasons[f"{outcome}: {reason}"] += 1
        if (ms := conversation.first_token_ms()) is not None:
            first_tokens.append(ms)
        if outcome == "busy":
            busy_ms.append(conversation.busy_ms())
        if outcome == "exact":
            exact.append(conversation)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        starts = await client.hmget(STARTS_KEY, [c.tag for c in exact]) if exact else []
    finally:
        await client.aclose()
    unmatched = 0
    timed_lags: list[tuple[float, float]] = []
    for conversation, started in zip(exact, starts, strict=True):
        if started is None:
            unmatched += 1
            continue
        timed_lags += conversation.delta_lags_ms(float(started), ends, due)
    lags = [lag for _, lag in timed_lags]
    # While every stream of the step streams at once: from the last first delta to the first
    # bot.done (before, conversations are still starting; after, they are ending).
    all_streaming = None
    if exact:
        since = max(c.answer()["deltas"][0][0] for c in exact)
        until = min(c.answer()["done"]["at"] for c in exact)
        if until > since:
            all_streaming = [lag for arrived, lag in timed_lags if since <= arrived <= until]
    # p99 lag per second of the step (from the first message sent): where in a step the
    # slow deltas were (while conversations were still starting, or all along).
    first_sent = min((c.sent_at for c in conversations if c.sent_at), default=0.0)
    by_second: dict[int, list[float]] = {}
    for arrived, lag in timed_lags:
        by_second.setdefault(int(arrived - first_sent), []).append(lag)
    deltas = sum(len(m["deltas"]) for c in conversations for m in c.messages.values())
    for error, count in connect_errors.items():
        reasons[f"connect: {error}"] += count
    return {
        "streams": n,
        "connected": len(sockets),
        "exact": outcomes["exact"],
        "wrong": outcomes["wrong"],
        "lost": outcomes["lost"],
        "failed": outcomes["failed"] + sum(connect_errors.values()),
        "busy": outcomes["busy"],
        "busy_max_ms": max(busy_ms) if busy_ms else None,
        "reasons": dict(reasons),
        "first_token_ms": p50_p99(first_tokens),
        "delta_lag_ms": p50_p99(lags),
        "delta_lag_max_ms": max(lags) if lags else None,
        "delta_lag_all_streaming_ms": p50_p99(all_streaming or []),
        "delta_lag_p99_by_second": {
            second: percentile(values, 99) for second, values in sorted(by_second.items())
        },
        "streams_without_start_time": unmatched,
        "deltas_received": deltas,
        "client_loop_lag_p99_ms": percentile(loop_lag.samples, 99),
    }


async def serve(url: str, redis_url: str) -> None:
    idle: list = []
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "quit":
            break
        if cmd == "idle":
            started = time.monotonic()
            new, errors = await open_many(url, command["total"] - len(idle), "opening idle sockets")
            idle += new
            opened_in = time.monotonic() - started
            latencies, silent = await ping_all(idle)
            emit(
                result={
                    "sockets": len(idle),
                    "connect_errors": dict(errors),
                    "open_seconds": opened_in,
                    "answered_ping": len(latencies),
                    "silent": silent,
                    "pong_ms": p50_p99(latencies),
                }
            )
        elif cmd == "close_idle":
            await close_all(idle)
            idle.clear()
            gc.collect()  # what thousands of sockets left, collected before streams are timed
            emit(result={})
        elif cmd == "stream":
            emit(
                result=await stream(
                    url,
                    redis_url,
                    command["n"],
                    command["spread"],
                    command["words"],
                    command["cps"],
                    command["timeout"],
                )
            )
    await close_all(idle)


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
