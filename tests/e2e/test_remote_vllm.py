"""The remote engine against vLLM's own OpenAI server (a real component, started once for the
module on SmolLM2-135M): prompt ids the server's template agrees with, a streamed answer with
its usage, an abort the server acts on, a tool call held to its grammar, an answer through the
worker, and the whole desk (worker process, Daphne, a customer's socket) on the server until
it is killed mid-answer (last: it ends the module's server).

Figures these tests print (`-s`): time to first token through the remote engine and with a
plain streamed request to the same server."""

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import httpx
import pytest
from channels.layers import get_channel_layer
from prometheus_client.parser import text_string_to_metric_families

from chat.models import Message
from devstack.localredis import start_redis
from devstack.stack import WORKER_READY_PATTERN, ReadyCheck, Supervisor, wait_ready
from inference_worker.coalesce import coalesce
from inference_worker.engines import resolved_dtype
from inference_worker.remote_engine import RemoteEngine
from inference_worker.tool_calls import read_tool_calls
from inference_worker.tool_choice import ToolUse
from tests.e2e.conftest import (
    MAX_TOKENS,
    MODEL_ENDINGS,
    ROOT,
    SHARED_ADDRESS,
    STACK_MODEL,
    STACK_MODEL_ENV,
    database_url,
    free_port,
)
from tests.e2e.test_faults import STORY, Customer, answer_budget
from tests.waiting import events_until_end, poll
from tests.worker.test_worker import submit

# Every test is transactional, so that pytest-django keeps them in file order (it runs tests
# of one kind of database use together): the last one kills the module's server.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900), pytest.mark.django_db(transaction=True)]

MODEL_DIR = STACK_MODEL_ENV["INFERENCE_MODEL_DIR"]
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long story about a dragon who runs a bakery."},
]
SHORT = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 24, "frequency_penalty": 0.0}
# Long enough that the answer is still being written when the test acts on it.
LONG = {**SHORT, "max_tokens": 1500}
START_TIMEOUT = 600  # measured here: ~70-110 s


class VllmServer:
    def __init__(self, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            MODEL_DIR,
            "--dtype",
            resolved_dtype(""),
            "--enforce-eager",
            "--max-model-len",
            "2048",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.log = log_path.open("wb")
        # A session of its own: the server and its engine process are ended together.
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_healthy(self) -> float:
        started = time.monotonic()
        next_report = started + 30
        while time.monotonic() - started < START_TIMEOUT:
            if self.process.poll() is not None:
                pytest.fail(f"vLLM's server exited at start:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            if time.monotonic() > next_report:
                print(
                    f"vLLM server starting ({time.monotonic() - started:.0f} s): {self.tail(1)}",
                    flush=True,
                )
                next_report += 30
            time.sleep(0.5)
        pytest.fail(f"vLLM's server was not healthy in {START_TIMEOUT} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> dict[str, float]:
        """vLLM's metrics, summed over labels: name → value."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
                if "finished_reason" in sample.labels:
                    key = f"{sample.name}:{sample.labels['finished_reason']}"
                    values[key] = values.get(key, 0.0) + sample.value
        return values

    def kill(self) -> None:
        """SIGKILL for the server and its engine process: a machine or container lost."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        # Whatever of its session is left (the engine process) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    server = VllmServer(tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        seconds = server.wait_healthy()
        print(f"vLLM's OpenAI server healthy after {seconds:.0f} s", flush=True)
        yield server
    finally:
        server.stop()


@pytest.fixture
async def engine(vllm_server):
    """A remote engine on the module's server; the `worker` fixture serves from it too."""
    engine = RemoteEngine(
        urls=[vllm_server.url],
        tokenizer_source=MODEL_DIR,
        model_name="SmolLM2-135M-Instruct",
        served_model="",
        max_model_len=2048,
        read_timeout=60,
    )
    await engine.load_tokenizer()
    yield engine
    await engine.aclose()


async def test_the_prompt_ids_are_those_the_servers_own_template_makes(vllm_server, engine):
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{vllm_server.url}/tokenize",
            json={"messages": MESSAGES, "add_generation_prompt": True},
        )
    assert engine.prompt_token_ids(MESSAGES) == response.json()["tokens"]


async def test_an_answer_streams_with_the_usage_the_server_counted(vllm_server, engine):
    ids = engine.prompt_token_ids(MESSAGES)
    before = vllm_server.metrics()
    chunks = [chunk async for chunk in engine.stream("usage-1", ids, SHORT)]
    counted = sum(chunk.token_count for chunk in chunks)

    def server_counts():  # the server's own counts of this one request
        after = vllm_server.metrics()
        return tuple(
            after[name] - before[name]
            for name in ("vllm:generation_tokens_total", "vllm:prompt_tokens_total")
        )

    # Its stat loggers may record a moment after the stream's end.
    await poll(lambda: server_counts() == (counted, len(ids)), timeout=5, every=0.2)
    assert "".join(chunk.text for chunk in chunks).strip() and counted > 0
    assert {chunk.prompt_tokens for chunk in chunks} == {len(ids)}
    assert chunks[-1].finish_reason in ("stop", "length")
    assert engine.running_requests() == 0


async def test_first_token_through_the_remote_engine_and_straight_from_the_server(
    vllm_server, engine
):
    """The figure (printed, not asserted: timing on a shared machine): what the remote engine
    adds to the server's first token. Rounds alternate, each question new to the prefix cache."""
    remote, plain = [], []
    async with httpx.AsyncClient(timeout=60) as client:
        for round_ in range(4):
            for way in ("remote", "plain"):
                messages = [MESSAGES[0], {"role": "user", "content": f"{way} {round_}: hello?"}]
                ids = engine.prompt_token_ids(messages)
                started = time.monotonic()
                if way == "remote":
                    stream = engine.stream(f"ttft-{round_}", ids, {**SHORT, "max_tokens": 2})
                    async with contextlib.aclosing(stream):
                        assert (await anext(stream)).token_count >= 1
                    remote.append(time.monotonic() - started)
                    continue
                body = {"prompt": ids, "max_tokens": 2, "temperature": 0.0, "stream": True}
                async with client.stream(
                    "POST", f"{vllm_server.url}/v1/completions", json=body
                ) as response:
                    lines = response.aiter_lines()
                    while not (await anext(lines)).startswith("data:"):
                        pass
                plain.append(time.monotonic() - started)
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    print(
        f"first token (median of {len(remote)}): remote engine {1000 * median(remote):.0f} ms, "
        f"plain streamed request {1000 * median(plain):.0f} ms",
        flush=True,
    )
    assert engine.running_requests() == 0


async def test_abort_closes_the_stream_and_the_server_drops_the_request(vllm_server, engine):
    ids = engine.prompt_token_ids(MESSAGES)
    before = vllm_server.metrics()
    source = engine.stream("abort-1", ids, LONG)
    # Read as an answer reads it: through coalescing, with its next read under way.
    async with contextlib.aclosing(coalesce(source, 0.03)) as chunks:
        assert (await anext(chunks)).text
        await poll(lambda: vllm_server.metrics()["vllm:num_requests_running"] == 1, timeout=30)
        await engine.abort("abort-1")
        assert [chunk async for chunk in chunks] == []
    await poll(lambda: vllm_server.metrics()["vllm:num_requests_running"] == 0, timeout=10)
    after = vllm_server.metrics()
    finished = ("stop", "length", "error")
    # Not finished by the model: vLLM aborted it, well short of its 1500 tokens.
    for reason in finished:
        key = f"vllm:request_success_total:{reason}"
        assert after[key] == before[key], reason
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert 0 < generated < LONG["max_tokens"] / 2
    await asyncio.sleep(1)  # and nothing is generated for it afterwards
    assert (
        vllm_server.metrics()["vllm:generation_tokens_total"]
        == after["vllm:generation_tokens_total"]
    )
    assert engine.running_requests() == 0 and engine.servers[0].up


async def test_a_forced_tool_call_is_held_to_its_grammar_by_the_server(engine):
    """The structural tag travels in vLLM's `structured_outputs`: the small model writes a
    valid call of the named function, arguments as its schema says."""
    tool = {
        "type": "function",
        "function": {
            "name": "order_status",
            "description": "Where an order is.",
            "parameters": {
                "type": "object",
                "properties": {"order_number": {"type": "string"}},
                "required": ["order_number"],
            },
        },
    }
    tool_use = ToolUse(tools=(tool,), mode="named", named="order_status", parallel=False)
    messages = [MESSAGES[0], {"role": "user", "content": "Where is my order 4711?"}]
    ids = engine.prompt_token_ids(messages, tools=tool_use.tools)
    sampling = {**SHORT, "max_tokens": 120}
    chunks = [chunk async for chunk in engine.stream("tool-1", ids, sampling, tool_use)]
    text = "".join(chunk.text for chunk in chunks)
    read = read_tool_calls(text, tool_use.names)
    assert read.invalid is None and len(read.calls) == 1, text
    arguments = json.loads(read.calls[0]["function"]["arguments"])
    assert read.calls[0]["function"]["name"] == "order_status"
    assert set(arguments) == {"order_number"} and isinstance(arguments["order_number"], str)


async def test_the_worker_streams_an_answer_from_the_server(worker, engine):
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(layer, reply, messages=MESSAGES, sampling=SHORT)
    start, *deltas, done = await events_until_end(layer, reply, timeout=60)
    assert start["model"] == "SmolLM2-135M-Instruct"
    assert done["type"] == "inference.done", done
    assert done["finish_reason"] in ("stop", "length")
    assert done["prompt_tokens"] == len(engine.prompt_token_ids(MESSAGES))
    assert 0 < done["completion_tokens"] <= SHORT["max_tokens"]
    assert "".join(delta["text"] for delta in deltas).strip()


@pytest.fixture
def remote_desk(vllm_server, django_db_setup, django_db_blocker, tmp_path):
    """The desk as production runs it on a fleet: its own Redis, Daphne, and the worker
    process (manage.py run_inference_worker) with INFERENCE_BACKEND=remote on the server."""
    from django.db import connection

    redis = start_redis(tmp_path / "redis")
    port, metrics_port = free_port(), free_port()
    with django_db_blocker.unblock():
        db_url = database_url(connection.settings_dict)
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "DATABASE_URL": db_url,
        "INFERENCE_METRICS_PORT": str(metrics_port),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        **SHARED_ADDRESS,
        "PYTHONUNBUFFERED": "1",
        "DEMO_PAGE": "true",  # key-less test sockets
        **STACK_MODEL_ENV,  # the tokenizer and chat template: the server's model
        "INFERENCE_BACKEND": "remote",
        "INFERENCE_REMOTE_URLS": vllm_server.url,
        "INFERENCE_REMOTE_HEALTH_SECONDS": "1",
    }
    output = io.StringIO()
    sup = Supervisor(out=output, stop_timeout=20)
    manage = [sys.executable, str(ROOT / "manage.py")]
    sup.start("worker", [*manage, "run_inference_worker"], env, cwd=ROOT)
    daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    sup.start("daphne", [*daphne, "cs_site.asgi:application"], env, cwd=ROOT)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        started = time.monotonic()
        wait_ready(
            sup,
            [
                ReadyCheck("daphne", f"http://127.0.0.1:{port}/healthz"),
                ReadyCheck("worker", metrics_url, pattern=WORKER_READY_PATTERN),
            ],
            threading.Event(),
            timeout=180,
        )
        print(f"remote desk ready in {time.monotonic() - started:.0f} s", flush=True)
    except RuntimeError:
        sup.stop_all()
        redis.stop()
        pytest.fail("the remote desk did not start:\n" + output.getvalue()[-5000:])
    yield types.SimpleNamespace(ws=f"ws://127.0.0.1:{port}/ws/chat/", output=output.getvalue)
    sup.stop_all()
    redis.stop()


async def test_a_server_killed_mid_answer_gives_the_error_the_partial_text_and_the_fallback(
    remote_desk, vllm_server, worker, engine
):
    """A customer's question answered through the desk on the remote server; then the server
    is SIGKILLed under two answers, the desk's and one of an in-process worker's. Last in the
    module: it ends the module's server."""
    await answer_budget(MAX_TOKENS)
    customer = await Customer.connect(remote_desk)
    await customer.send("Hello! Where is my order?", "q1")
    text, done = await customer.answer(120)
    assert not done["fallback"] and done["finish_reason"] in MODEL_ENDINGS, done
    stored = await Message.objects.aget(pk=done["message_id"])
    assert stored.text == text and text.strip() and not stored.is_partial
    assert stored.model_name == STACK_MODEL.folder
    assert stored.completion_tokens == done["usage"]["completion_tokens"] > 0

    await answer_budget(600)
    await customer.send(STORY, "story")
    seen = await customer.streaming()
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(layer, reply, request_id="killed-1", messages=MESSAGES, sampling=LONG)
    events = []
    async with asyncio.timeout(60):
        while not any(event["type"] == "inference.delta" for event in events):
            events.append(await layer.receive(reply))
    vllm_server.kill()
    killed = time.monotonic()

    # The worker's answer: the text so far, then one error, as from a dead local engine.
    events += await events_until_end(layer, reply, timeout=30)
    start, *deltas, error = events
    assert start["type"] == "inference.start"
    assert error["type"] == "inference.error" and error["code"] == "engine_error", error
    assert error["message"] == "RemoteStreamLost"
    assert "".join(delta["text"] for delta in deltas if delta["type"] == "inference.delta")
    assert not engine.servers[0].up
    assert not worker.running and engine.running_requests() == 0

    # The customer's: the partial text kept and flagged, then the fallback.
    frames = await customer.until(lambda f: f["type"] == "bot.done" and f["fallback"], 60)
    fallback_in = time.monotonic() - killed
    partial = next(f for f in frames if f["type"] == "bot.done" and not f["fallback"])
    assert partial["partial"] is True
    kept = await Message.objects.aget(pk=partial["message_id"])
    assert kept.text.startswith(seen) and kept.is_partial
    assert "RemoteStreamLost" in remote_desk.output()

    # With no server up, the next question gets the fallback at once.
    asked = await customer.send("Are you still there?", "after")
    await customer.until(lambda f: f["type"] == "bot.done" and f["fallback"], 30)
    await customer.ws.close()
    print(
        f"server killed mid-answer: the fallback {fallback_in:.1f} s later "
        f"(partial: {partial['finish_reason']}); with no server up, the fallback "
        f"{time.monotonic() - asked:.1f} s after the question",
        flush=True,
    )
    assert "NoRemoteServer" in remote_desk.output()
