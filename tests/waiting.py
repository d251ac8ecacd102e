"""Waiting helpers shared by the tests of answers and of the inference worker."""

import asyncio

from prometheus_client import REGISTRY


async def poll(check, timeout: float = 5.0, every: float = 0.02):
    """The first truthy value of check() within timeout (check may be async): for state that
    lives in another task or in Redis."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(every)


async def events_until_end(
    layer, channel, timeout: float = 5, *, keepalives: bool = False
) -> list[dict]:
    """A worker's events on `channel`, up to and including its done or error. Keepalives are
    left out unless asked for: a slow machine's silence may put one anywhere among the deltas."""
    got = []
    async with asyncio.timeout(timeout):
        while True:
            event = await layer.receive(channel)
            if event["type"] == "inference.keepalive" and not keepalives:
                continue
            got.append(event)
            if event["type"] in ("inference.done", "inference.error"):
                return got


def sample(name: str, **labels) -> float:
    """A Prometheus sample of this process's registry (0 before it is first counted)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
