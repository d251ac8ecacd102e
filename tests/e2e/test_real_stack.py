"""End to end with real parts: Redis server, vLLM worker with the real model, Daphne, and a real
WebSocket client. Assertions read the database Daphne wrote and the engine's own metrics."""

import asyncio
import json
import os
import time

import psutil
import pytest
import websockets

from chat.models import BotProfile, Message
from inference_worker.engine_priority import CPU_ENGINE_NICE
from tests.e2e.conftest import MODEL_ENDINGS, STACK_MODEL, frames_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CANCELLED = "cs_worker_requests_total{outcome=cancelled}"
RUNNING = "vllm:num_requests_running"
GENERATED = "vllm:generation_tokens_total"


async def open_chat(stack, query: str = ""):
    ws = await websockets.connect(
        f"{stack.ws}/ws/chat/?{query}", origin=stack.origin, open_timeout=10
    )
    return ws, json.loads(await ws.recv())


async def ask(ws, text: str, client_id: str) -> tuple[dict, str, dict]:
    await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
    frames = await frames_until(ws, "bot.done")
    ack = next(f for f in frames if f["type"] == "message.ack")
    # A second bot.start (`replace`: a guard cut the answer back) starts the text anew.
    last_start = max(i for i, f in enumerate(frames) if f["type"] == "bot.start")
    text = "".join(f["text"] for f in frames[last_start:] if f["type"] == "bot.delta")
    return ack, text, frames[-1]


async def test_two_turns_stream_from_the_real_model_and_are_stored(real_stack):
    ws, conversation = await open_chat(real_stack, "lang=en&region=Lyon")
    assert conversation["type"] == "conversation" and conversation["token"]
    ack1, text1, done1 = await ask(ws, "Hello, my order number is 4711. Where is it?", "q1")
    ack2, text2, done2 = await ask(ws, "Which order number did I give you?", "q2")
    await ws.close()

    for text, done in ((text1, done1), (text2, done2)):
        assert text.strip() and done["fallback"] is False
        assert done["finish_reason"] in MODEL_ENDINGS
        stored = await Message.objects.aget(pk=done["message_id"])
        assert stored.text == text  # what streamed is exactly what was stored
        assert stored.model_name == STACK_MODEL.folder
        assert stored.completion_tokens == done["usage"]["completion_tokens"] > 0
        assert stored.prompt_tokens == done["usage"]["prompt_tokens"] > 0
        assert 0 < stored.ttft_ms <= stored.total_ms
        assert not stored.is_partial
    # The second prompt carries the first turn: the first question and its answer, as stored,
    # are turns of what the model was given. (Token counts cannot show it: each question
    # brings its own help-centre lines, and the first's may be the longer.)
    second = await Message.objects.aget(pk=done2["message_id"])
    turns = [(turn["role"], turn["content"]) for turn in second.prompt[1:]]
    assert turns == [
        ("user", "Hello, my order number is 4711. Where is it?"),
        ("assistant", text1),
        ("user", "Which order number did I give you?"),
    ]
    roles = [
        m.role
        async for m in Message.objects.filter(conversation_id=conversation["id"]).order_by("id")
    ]
    assert roles == ["customer", "bot", "customer", "bot"]


async def running_soon(stack, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while stack.metrics().get(RUNNING, 0) < 1:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_disconnect_mid_answer_aborts_the_request_in_the_engine(real_stack):
    # A long answer budget (tokens and the answer limit), so generation is still running when
    # the customer leaves.
    # The model answers what no article covers: another test may have left the sample help
    # centre in Daphne's index.
    long = {
        "max_tokens": 1500,
        "answer_max_words": 10_000,
        "answer_max_han": 10_000,
        "when_no_knowledge": BotProfile.WhenNoKnowledge.GENERAL,
    }
    await BotProfile.objects.filter(is_default=True).aupdate(**long)
    if not await BotProfile.objects.filter(is_default=True).aexists():
        await BotProfile.objects.acreate(
            name="long", is_default=True, system_prompt="You are a storyteller.", **long
        )
    cancelled_before = real_stack.metrics().get(CANCELLED, 0)
    # A tiny model can end an answer early, or loop (then the loop guard ends it): ask again,
    # for a story or for a long list, which no guard takes for a loop.
    asks = (
        "List the numbers from 1 to 1000, one per line.",
        "Write a very long story about a lighthouse keeper, with many chapters.",
    ) * 3
    for attempt, text in enumerate(asks):
        ws, conversation = await open_chat(real_stack)
        await ws.send(json.dumps({"type": "message", "client_id": f"story{attempt}", "text": text}))
        await frames_until(ws, "bot.delta")
        # vLLM's gauge follows the engine's steps with a lag: look for a moment.
        if await running_soon(real_stack):
            break
        await ws.close()
    else:
        pytest.fail("the model never produced a long enough answer to interrupt")
    await ws.close()

    # The engine itself stops: vLLM's own gauge of running requests drops to zero and its
    # token counter stops moving, though the answer had up to 1,500 tokens still to go.
    # Within 2 s: well before the worker would notice on its own that nobody reads the
    # stream (the consumer's channel fills after ~100 deltas, 3 s or more).
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        metrics = real_stack.metrics()
        if metrics[RUNNING] == 0 and metrics.get(CANCELLED, 0) > cancelled_before:
            break
        await asyncio.sleep(0.2)
    metrics = real_stack.metrics()
    assert metrics[RUNNING] == 0
    assert metrics[CANCELLED] == cancelled_before + 1
    await asyncio.sleep(1)  # a second in which no token may be generated (the test)
    assert real_stack.metrics()[GENERATED] == metrics[GENERATED]

    bot = await Message.objects.aget(conversation_id=conversation["id"], role="bot")
    assert bot.is_partial and bot.finish_reason == "disconnected" and bot.text


async def test_resume_with_the_token_continues_the_conversation(real_stack):
    ws, conversation = await open_chat(real_stack)
    _, first_answer, _ = await ask(ws, "Hi, I need help with my invoice.", "a")
    await ws.close()

    ws, resumed = await open_chat(
        real_stack, f"conversation={conversation['id']}&token={conversation['token']}"
    )
    assert resumed == {
        "type": "conversation",
        "id": conversation["id"],
        "status": "bot",
        "resumed": True,
    }
    history = json.loads(await ws.recv())
    assert [(m["role"], m["text"]) for m in history["messages"]] == [
        ("customer", "Hi, I need help with my invoice."),
        ("bot", first_answer),
    ]
    _, second_answer, done = await ask(ws, "It is invoice 99.", "b")
    await ws.close()
    assert second_answer.strip() and done["fallback"] is False
    assert await Message.objects.filter(conversation_id=conversation["id"]).acount() == 4

    # A wrong token for the same id gets an error frame and a close, not the conversation.
    ws, refused = await open_chat(real_stack, f"conversation={conversation['id']}&token=guess")
    assert refused["code"] == "conversation_not_found"
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd.code == 4404


def test_the_engine_computes_niced_and_the_worker_streams_at_full_priority(real_stack):
    """On a CPU host the engine's processes yield a core to Daphne, Redis and the worker's
    loop (inference_worker/engine_priority.py); the worker's own threads do not. Last in the
    module: the answers above ran first, so threads the engine starts late are counted too."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    worker = psutil.Process(real_stack.worker_pid)
    # vLLM names its engine process "VLLM::EngineCore" (the worker's later helpers, such as
    # its deathwatch, are not the engine).
    engine = [p for p in worker.children(recursive=True) if p.name().startswith("VLLM::")]
    threads = [thread.id for process in engine for thread in process.threads()]
    assert len(threads) > 2  # the engine core: its loop and the model's compute threads
    assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in threads} == {max(ours, CPU_ENGINE_NICE)}
    assert {os.getpriority(os.PRIO_PROCESS, thread.id) for thread in worker.threads()} == {ours}
