"""A worker's stream events to one web process, bundled when they meet (group commit).

Every delta of every answer is a message to the web process that asked for it. Sent one by
one, hundreds of streams cost a Redis round trip per delta in the worker, an entry in Redis
and one to unpack in the web process: measured, that was most of what the worker and Redis
spent on the pipeline benchmark. A mailbox sends at once when nothing is on its way to its
process, so a stream alone never waits; events that become due while a send is on its way
leave together in the next one, as one bundle. Bundles grow with the load and the round trips
stay near one per round-trip time, with no timer and no added wait beyond the send in flight.

Each stream awaits its own event's send before producing the next, so a stream's events keep
their order, and a full channel or a lost Redis reaches the stream that sent it, as with
`layer.send` (ChannelFull, RedisError/OSError).
"""

import asyncio
from collections.abc import Callable

from channels.exceptions import ChannelFull

MAX_BUNDLE = 100  # events in one message; the rest leave in the next


class Mailbox:
    def __init__(self, layer, *, on_idle: Callable[[], None] | None = None):
        """`layer`: a channel layer with `send_bundle` (runtime.channel_layer). `on_idle` is
        called when the mailbox has sent everything (its owner may then forget it)."""
        self.layer = layer
        self.on_idle = on_idle
        self._waiting: list[tuple[str, dict, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None

    async def send(self, channel: str, event: dict) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((channel, event, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_waiting())
        await future

    async def _send_waiting(self) -> None:
        while self._waiting:
            bundle, self._waiting = self._waiting[:MAX_BUNDLE], self._waiting[MAX_BUNDLE:]
            # An event whose sender was cancelled meanwhile is not sent.
            bundle = [item for item in bundle if not item[2].done()]
            if not bundle:
                continue
            try:
                await self._send_bundle([(channel, event) for channel, event, _ in bundle])
            except asyncio.CancelledError:
                for *_, future in bundle:
                    future.cancel()
                raise
            except ChannelFull:
                for *_, future in bundle:
                    _settle(future, exception=ChannelFull())
            except Exception as exc:  # noqa: BLE001 - each sender decides what it means
                for *_, future in bundle:
                    _settle(future, exception=exc)
            else:
                for *_, future in bundle:
                    _settle(future)
        if self.on_idle is not None:
            self.on_idle()

    async def _send_bundle(self, pairs: list[tuple[str, dict]]) -> None:
        send_bundle = getattr(self.layer, "send_bundle", None)
        if send_bundle is not None:
            await send_bundle(pairs)
            return
        for channel, event in pairs:  # a layer without bundles (tests' in-memory layer)
            await self.layer.send(channel, event)


def _settle(future: asyncio.Future, *, exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is None:
        future.set_result(None)
    else:
        future.set_exception(exception)
