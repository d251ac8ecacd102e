"""Bundled sends from a worker to a web process (inference_worker.mailbox) over the desk's
channel layer and a real Redis: what meets in the mailbox leaves as one message, arrives as
separate messages in order, and failures reach every sender."""

import asyncio

import pytest
from channels.exceptions import ChannelFull

from inference_worker.mailbox import Mailbox
from tests.worker.helpers import layer


class CountingLayer:
    """Wraps the real layer and records how many Redis messages each send made."""

    def __init__(self, inner):
        self.inner = inner
        self.messages: list[int] = []  # events per Redis message, in order
        self.sending = asyncio.Event()  # a send is on its way

    async def send(self, channel, event):
        self.messages.append(1)
        self.sending.set()
        await self.inner.send(channel, event)

    async def send_bundle(self, pairs):
        self.messages.append(len(pairs))
        self.sending.set()
        await self.inner.send_bundle(pairs)


async def test_events_that_meet_leave_together_and_arrive_one_by_one_in_order():
    desk = layer()
    first, second = await desk.new_channel(), await desk.new_channel()
    counting = CountingLayer(desk)
    mailbox = Mailbox(counting)

    def send(n):
        return mailbox.send(first if n % 2 else second, {"type": "inference.delta", "n": n})

    # One sender: it goes at once. Five more while it is on its way: they wait for it and
    # leave together as one bundle.
    alone = asyncio.create_task(send(0))
    await counting.sending.wait()
    await asyncio.gather(alone, *(send(n) for n in range(1, 6)))
    assert counting.messages == [1, 5]
    got_first = [await desk.receive(first) for _ in range(3)]
    got_second = [await desk.receive(second) for _ in range(3)]
    assert [m["n"] for m in got_first] == [1, 3, 5]
    assert [m["n"] for m in got_second] == [0, 2, 4]
    # Six due in the same moment: one message.
    await asyncio.gather(*(send(n) for n in range(6)))
    assert counting.messages == [1, 5, 6]
    assert [(await desk.receive(second))["n"] for _ in range(3)] == [0, 2, 4]
    await desk.close_pools()


async def test_a_bundle_reaches_attached_sinks_in_order():
    desk = layer()
    reply, other = await desk.new_channel(), await desk.new_channel()
    received = []
    desk.attach(reply, received.append)
    await desk.send_bundle([(reply, {"type": "a"}), (other, {"type": "b"}), (reply, {"type": "c"})])
    # Reading any channel of the process reads the bundle: the sink's messages are handed
    # over and the other channel's message is returned.
    assert await desk.receive(other) == {"type": "b"}
    assert [m["type"] for m in received] == ["a", "c"]
    desk.detach(reply)
    await desk.close_pools()


async def test_a_lone_event_is_sent_at_once_not_held_for_company():
    desk = layer()
    reply = await desk.new_channel()
    counting = CountingLayer(desk)
    mailbox = Mailbox(counting)
    await mailbox.send(reply, {"type": "inference.delta", "text": "hi"})
    assert counting.messages == [1]
    assert await desk.receive(reply) == {"type": "inference.delta", "text": "hi"}
    await desk.close_pools()


async def test_a_full_channel_reaches_every_sender_of_the_bundle():
    desk = layer(capacity=2)
    reply = await desk.new_channel()
    await desk.send(reply, {"type": "x"})
    await desk.send(reply, {"type": "y"})  # the process's key holds 2: full
    mailbox = Mailbox(desk)
    results = await asyncio.gather(
        *(mailbox.send(reply, {"type": "z", "n": n}) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, ChannelFull) for result in results)
    await desk.close_pools()


async def test_a_bundle_must_stay_within_one_process():
    desk = layer()
    other_process = layer()
    mine, theirs = await desk.new_channel(), await other_process.new_channel()
    with pytest.raises(AssertionError):
        await desk.send_bundle([(mine, {"type": "a"}), (theirs, {"type": "b"})])
    await desk.close_pools()
    await other_process.close_pools()


async def test_a_cancelled_sender_is_left_out_and_the_mailbox_says_when_it_is_idle():
    desk = layer()
    reply = await desk.new_channel()
    idle = asyncio.Event()
    mailbox = Mailbox(desk, on_idle=idle.set)
    lone = asyncio.create_task(mailbox.send(reply, {"type": "first"}))
    left = asyncio.create_task(mailbox.send(reply, {"type": "cancelled"}))
    kept = asyncio.create_task(mailbox.send(reply, {"type": "kept"}))
    await asyncio.sleep(0)  # all three are waiting; the first is on its way
    left.cancel()
    await asyncio.gather(lone, kept)
    await asyncio.wait_for(idle.wait(), 5)
    assert [(await desk.receive(reply))["type"] for _ in range(2)] == ["first", "kept"]
    await desk.close_pools()
