"""The remote engine's spreading, health checks, failures and wire format, against scripted
stand-ins for vLLM's OpenAI server (tests/worker/fake_openai.py); the real server is driven by
tests/e2e/test_remote_vllm.py."""

import asyncio
import contextlib
import functools
import socket
from pathlib import Path

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from inference_worker.coalesce import coalesce
from inference_worker.engines import build_engine
from inference_worker.model_prep import resolve_model_source
from inference_worker.remote_engine import (
    NoRemoteServer,
    RemoteEngine,
    RemoteRequestRefused,
    RemoteStreamLost,
)
from inference_worker.tool_choice import ToolUse
from inference_worker.tool_grammar import structural_tag
from tests.waiting import events_until_end, poll, sample
from tests.worker.fake_openai import FakeOpenAIServer
from tests.worker.test_worker import submit


@functools.cache
def model_dir() -> str:
    """The configured model's folder (the embedded default, prepared on first use): its tokenizer
    and template are what the remote engine reads."""
    return str(resolve_model_source(settings.INFERENCE, progress=False))


SAMPLING = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 64, "frequency_penalty": 0.1}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]


def remote(*urls: str, **options) -> RemoteEngine:
    options = {
        "tokenizer_source": model_dir(),
        "model_name": "remote-test",
        "served_model": "",
        "max_model_len": 2048,
        "connect_timeout": 2.0,
        "read_timeout": 10.0,
        **options,
    }
    return RemoteEngine(urls=urls, **options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def servers(count: int, **script):
    started = [await FakeOpenAIServer(**script).start() for _ in range(count)]
    try:
        yield started
    finally:
        for server in started:
            server.release.set()
            await server.stop()


async def collect(engine, request_id="r1", ids=(1, 2, 3), tool_use=None):
    return [chunk async for chunk in engine.stream(request_id, list(ids), SAMPLING, tool_use)]


async def test_an_answer_streams_with_usage_and_the_request_carries_the_prompt_ids():
    async with servers(1) as (server,):
        engine = remote(server.url, served_model="qwen3", api_key="s3cret")
        await engine.load_tokenizer()
        try:
            ids = engine.prompt_token_ids(MESSAGES)
            chunks = await collect(engine, "req-7", ids)
        finally:
            await engine.aclose()
    assert "".join(chunk.text for chunk in chunks) == "Hello there, friend."
    assert sum(chunk.token_count for chunk in chunks) == 5
    assert chunks[-1].finish_reason == "stop"
    assert [chunk.finish_reason for chunk in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert {chunk.prompt_tokens for chunk in chunks} == {len(ids)}
    (body,) = server.bodies
    assert body["prompt"] == ids
    assert body["stream"] is True and body["stream_options"]["include_usage"] is True
    assert body["model"] == "qwen3"
    assert {key: body[key] for key in SAMPLING} == SAMPLING
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (0, 0.0, 1.0)
    assert "structured_outputs" not in body
    assert server.headers[0]["authorization"] == "Bearer s3cret"
    assert server.headers[0]["x-request-id"] == "req-7"


async def test_the_prompt_ids_are_the_local_engines():
    """The same tokenizer and template as the in-process engine: the ChatML rendering of the
    model folder, special tokens once."""
    from transformers import AutoTokenizer

    engine = remote(f"http://127.0.0.1:{free_port()}")
    await engine.load_tokenizer()
    await engine.aclose()
    ids = engine.prompt_token_ids(MESSAGES)
    text = AutoTokenizer.from_pretrained(model_dir()).decode(ids)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|im_start|>") == 3


async def test_a_tool_constrained_answer_sends_the_structural_tag():
    tool = {
        "type": "function",
        "function": {
            "name": "order_status",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        },
    }
    tool_use = ToolUse(tools=(tool,), mode="required")
    async with servers(1) as (server,):
        engine = remote(server.url)
        try:
            await collect(engine, tool_use=tool_use)
            await collect(engine, "r2", tool_use=ToolUse(tools=(tool,), mode="auto"))
        finally:
            await engine.aclose()
    required, auto = server.bodies
    assert required["structured_outputs"] == {"structural_tag": structural_tag(tool_use)}
    assert "order_status" in required["structured_outputs"]["structural_tag"]
    assert "structured_outputs" not in auto  # "auto" is left free, as vLLM's server leaves it
    assert "model" not in required  # none configured: the server's one model


async def test_a_request_goes_to_the_server_with_the_fewest_outstanding_streams():
    async with servers(2, mode="hold") as (first, second):
        engine = remote(first.url, second.url)
        streams = [engine.stream(f"r{n}", [1, 2], SAMPLING) for n in range(3)]
        try:
            # Each stream is opened (its first word read) before the next one is sent.
            await anext(streams[0])
            await anext(streams[1])
            assert (first.streaming, second.streaming) == (1, 1)
            assert engine.running_requests() == 2
            first.release.set()  # the first server's stream ends: it has the fewest now
            assert "".join([c.text async for c in streams[0]]).endswith("friend.")
            await anext(streams[2])
            assert [s.served for s in engine.servers] == [2, 1]
            assert [s.outstanding for s in engine.servers] == [1, 1]
        finally:
            for stream in streams:
                await stream.aclose()
            await engine.aclose()
    assert engine.running_requests() == 0


async def test_a_server_that_refuses_connections_is_skipped_and_back_once_healthy():
    port = free_port()  # nothing listens there yet
    async with servers(1) as (live,):
        engine = remote(f"http://127.0.0.1:{port}", live.url)
        try:
            # The first pick is the dead server: the request moves on, no token lost.
            chunks = await collect(engine)
            assert "".join(chunk.text for chunk in chunks) == "Hello there, friend."
            assert not engine.servers[0].up and engine.servers[0].last_error == "ConnectError"
            await collect(engine, "r2")
            assert len(live.bodies) == 2  # the down server is not tried again
            revived = await FakeOpenAIServer().start(port)
            try:
                await engine.check_health()
                assert engine.servers[0].up
                await collect(engine, "r3")
                assert len(revived.bodies) == 1
            finally:
                await revived.stop()
        finally:
            await engine.aclose()


async def test_a_server_that_hangs_up_before_answering_is_skipped():
    async with servers(1, mode="hang_up") as (broken,), servers(1) as (live,):
        engine = remote(broken.url, live.url)
        try:
            chunks = await collect(engine)
        finally:
            await engine.aclose()
    assert "".join(chunk.text for chunk in chunks) == "Hello there, friend."
    assert len(broken.bodies) == len(live.bodies) == 1
    assert not engine.servers[0].up and engine.servers[1].up


async def test_the_health_checks_take_a_failing_server_out_and_back():
    async with servers(2) as (first, second):
        engine = remote(first.url, second.url, health_seconds=0.05)
        await engine.load_tokenizer()  # starts the background checks
        try:
            assert sample("cs_worker_remote_servers_up") == 2
            first.healthy = False
            await poll(lambda: not engine.servers[0].up, timeout=5)
            assert sample("cs_worker_remote_servers_up") == 1
            for n in range(3):
                await collect(engine, f"r{n}")
            assert (len(first.bodies), len(second.bodies)) == (0, 3)
            first.healthy = True
            await poll(lambda: engine.servers[0].up, timeout=5)
            await collect(engine, "r3")
            assert len(first.bodies) == 1  # back in the spread
            first.healthy = second.healthy = False
            await poll(lambda: not any(server.up for server in engine.servers), timeout=5)
            assert sample("cs_worker_remote_servers_up") == 0
            with pytest.raises(NoRemoteServer):
                await collect(engine, "none")
            assert (len(first.bodies), len(second.bodies)) == (1, 3)
        finally:
            await engine.aclose()


async def test_a_server_dying_mid_answer_ends_the_stream_with_an_error_after_its_text():
    async with servers(1, mode="die") as (server,):
        engine = remote(server.url)
        texts = []
        try:
            with pytest.raises(RemoteStreamLost):
                async for chunk in engine.stream("r1", [1, 2], SAMPLING):
                    texts.append(chunk.text)
        finally:
            await engine.aclose()
    assert "".join(texts) == "Hello there"
    assert not engine.servers[0].up  # until a health check passes
    assert engine.running_requests() == 0


async def test_abort_closes_the_stream_and_the_server_sees_its_client_leave():
    async with servers(1, mode="hold") as (server,):
        engine = remote(server.url)
        try:
            source = engine.stream("r1", [1, 2], SAMPLING)
            # As an answer reads it: through coalescing, whose next read is under way when
            # a guard or a cancel aborts.
            async with contextlib.aclosing(coalesce(source, 0.01)) as chunks:
                first = await anext(chunks)
                assert first.text == "Hello"
                await engine.abort("r1")
                assert [chunk async for chunk in chunks] == []  # ended, not failed
            await poll(lambda: server.disconnects == 1, timeout=5)
            assert engine.running_requests() == 0
            assert engine.servers[0].up  # an abort says nothing against the server
            await engine.abort("r1")  # twice, or for a finished request: nothing happens
        finally:
            await engine.aclose()


async def test_a_refused_request_is_an_error_and_the_server_stays_up():
    async with servers(1, mode="refuse") as (server,):
        engine = remote(server.url)
        try:
            with pytest.raises(RemoteRequestRefused, match="400"):
                await collect(engine)
        finally:
            await engine.aclose()
    assert engine.servers[0].up and engine.running_requests() == 0


@pytest.fixture
async def dying_server():
    async with servers(1, mode="die") as (server,):
        yield server


@pytest.fixture
async def engine(dying_server):
    """The `worker` fixture (tests/conftest.py) serves from this engine."""
    engine = remote(dying_server.url)
    await engine.load_tokenizer()
    yield engine
    await engine.aclose()


async def test_the_worker_ends_an_answer_whose_server_died_with_an_error_after_its_text(
    worker, engine
):
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await submit(layer, reply)
    start, *deltas, error = await events_until_end(layer, reply, timeout=10)
    assert start["type"] == "inference.start" and start["model"] == "remote-test"
    assert "".join(delta["text"] for delta in deltas) == "Hello there"
    assert error["type"] == "inference.error" and error["code"] == "engine_error"
    assert error["message"] == "RemoteStreamLost"
    assert not worker.running and engine.running_requests() == 0


def test_the_backend_setting_chooses_the_engine():
    inference = {
        **settings.INFERENCE,
        "BACKEND": "remote",
        "REMOTE_URLS": ["http://gpu-1:8000", "http://gpu-2:8000/"],
        "MODEL": model_dir(),
        "MODEL_NAME": "",
    }
    engine = build_engine(inference)
    assert isinstance(engine, RemoteEngine)
    assert [server.url for server in engine.servers] == ["http://gpu-1:8000", "http://gpu-2:8000"]
    assert engine.model_name == Path(model_dir()).name
    asyncio.run(engine.aclose())
    with pytest.raises(ValueError, match="INFERENCE_REMOTE_URLS"):
        build_engine({**inference, "REMOTE_URLS": []})
    with pytest.raises(ValueError, match="local"):
        build_engine({**inference, "BACKEND": "gpu"})
