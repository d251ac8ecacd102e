"""A wave of customers asking at once: each request leaves after its question's one hop.

On SQLite every database hop of the process runs on one thread (runtime/aio.py), so each hop an
answer makes before its request leaves waits behind every other socket's. These tests count the
hops (no timing): a new question's request leaves after the one hop that stored it.
"""

import asyncio

import pytest
from channels.db import DatabaseSyncToAsync

from chat.answering import answer_ended
from chat.answering.run import AnswerRun
from tests.conftest import running_worker

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST = "request sent"
# Hops that are not an answer's reads before its request: the help centre's index built once
# for the process, and the bot message stored when a worker starts an earlier answer.
NOT_BEFORE_A_REQUEST = {"passages_for_index", "bot_message_start"}


@pytest.fixture
async def wide_worker(engine):
    """The conftest's worker with a slot for each of the wave's answers: none waits for
    another's (nor, with the queue's limit, gets the busy fallback)."""
    async with running_worker(engine, max_concurrency=16, name="test-wide-worker") as worker:
        yield worker


@pytest.fixture
def hops(monkeypatch) -> list[str]:
    """Every database hop from async code, by the name of its function, and REQUEST each time
    an answer's request leaves for the workers."""
    seen: list[str] = []
    hop = DatabaseSyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        seen.append(getattr(self.func, "__name__", repr(self.func)))
        return await hop(self, *args, **kwargs)

    dispatch = AnswerRun._dispatch

    async def dispatched(self, *args, **kwargs):
        seen.append(REQUEST)
        return await dispatch(self, *args, **kwargs)

    monkeypatch.setattr(DatabaseSyncToAsync, "__call__", counted)
    monkeypatch.setattr(AnswerRun, "_dispatch", dispatched)
    return seen


def before_last_request(hops: list[str]) -> list[str]:
    last = len(hops) - 1 - hops[::-1].index(REQUEST)
    return [h for h in hops[:last] if h not in NOT_BEFORE_A_REQUEST]


async def test_a_question_leaves_for_the_workers_after_the_hop_that_stored_it(
    connect, worker, hops
):
    client, _ = await connect("lang=en")
    hops.clear()  # connecting's own (the session's user)
    await client.send({"type": "message", "text": "When do orders ship?", "client_id": "1"})
    *_, done = await client.answer()
    assert done["fallback"] is False
    # The prompt's parts and the site's actions were read in the storing hop.
    assert before_last_request(hops) == ["_store_customer_message"]


async def test_a_later_question_in_the_same_conversation_also_takes_one_hop(connect, worker, hops):
    client, first = await connect("lang=en")
    hops.clear()
    await client.send({"type": "message", "text": "Question 1?", "client_id": "1"})
    await client.answer()
    # The run lets go of the conversation (a question it catches while ending is its own, read
    # with its next answer's hops).
    assert await answer_ended(first["id"])
    hops.clear()
    await client.send({"type": "message", "text": "Question 2?", "client_id": "2"})
    await client.answer()
    assert before_last_request(hops) == ["_store_customer_message"]


async def test_a_wave_of_sixteen_sends_sixteen_requests_after_sixteen_hops(
    connect, wide_worker, hops
):
    clients = [(await connect("lang=en"))[0] for _ in range(16)]
    hops.clear()
    # All connected first, then all ask at once.
    await asyncio.gather(
        *(
            client.send({"type": "message", "text": f"Where is order {i}?", "client_id": "1"})
            for i, client in enumerate(clients)
        )
    )
    answers = await asyncio.gather(*(client.answer(timeout=30) for client in clients))
    assert all(frames[-1]["fallback"] is False for frames in answers)
    assert hops.count(REQUEST) == 16
    # One hop per question before its request: had each answer read its prompt's parts and its
    # site's actions in hops of their own, 32 more would queue behind the other sockets' on the
    # one thread. (An answer that ends meanwhile stores itself and looks for a newer question.)
    assert hops.count("_store_customer_message") == 16
    assert set(hops) <= {
        "_store_customer_message",
        REQUEST,
        *NOT_BEFORE_A_REQUEST,
        "bot_message_finish",
        "newest_unanswered_customer_message",
    }
