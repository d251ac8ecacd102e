"""The request loop: take requests from the shared channel, stream answers to their consumers.

Each request goes to exactly one worker (the channel layer's receive), so more workers scale
out with no code change. A worker takes a request only when it has a free slot, leaving the
rest in Redis for any other worker. Cancellations are group-sent to every worker, because a
consumer does not know which one took its request.
"""

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from chat import events
from chat.events import InferenceErrorCode as Code
from inference_worker import metrics, presence
from inference_worker.budget import ContextOverflow, fit_to_budget
from inference_worker.coalesce import coalesce
from inference_worker.engines import Engine

log = logging.getLogger("inference_worker")

_request_adapter = TypeAdapter(events.InferenceRequest)
# Remember cancellations that arrive before their request (it is still queued in Redis).
_EARLY_CANCELS_KEPT = 10_000


class InferenceWorker:
    def __init__(self, *, engine: Engine, channel_layer: BaseChannelLayer, redis: Redis,
                 channel: str, control_group: str, max_concurrency: int, coalesce_ms: int,
                 heartbeat_seconds: float, name: str | None = None):
        self.engine = engine
        self.layer = channel_layer
        self.redis = redis
        self.channel = channel
        self.control_group = control_group
        self.slots = asyncio.Semaphore(max_concurrency)
        self.interval = coalesce_ms / 1000
        self.heartbeat_seconds = heartbeat_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.running: dict[str, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()  # strong references: asyncio keeps only weak ones
        self.early_cancels: OrderedDict[str, float] = OrderedDict()
        self.stopping = asyncio.Event()
        self.control_channel = ""

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Serve until `stop()`; then end every running request with an error."""
        self.control_channel = await self.layer.new_channel()
        await self.layer.group_add(self.control_group, self.control_channel)
        await presence.beat(self.redis, self.name)
        loops = [
            asyncio.create_task(self._take_requests(), name="requests"),
            asyncio.create_task(self._take_control(), name="control"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        metrics.READY.set(1)
        log.info("worker %s taking requests from %r", self.name, self.channel)
        if ready is not None:
            ready()
        stopped = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and task.exception() is not None:
                    raise task.exception()
        finally:
            metrics.READY.set(0)
            for task in [stopped, *loops]:
                task.cancel()
            await self._end_running(reason="shutdown")
            await self._leave()

    def stop(self) -> None:
        self.stopping.set()

    async def _leave(self) -> None:
        try:
            await presence.leave(self.redis, self.name)
            await self.layer.group_discard(self.control_group, self.control_channel)
        except (RedisError, OSError):
            log.warning("could not deregister from Redis; it expires by itself")

    # --- loops ---------------------------------------------------------------------------------

    async def _take_requests(self) -> None:
        while True:
            await self.slots.acquire()
            try:
                message = await self.layer.receive(self.channel)
            except BaseException:
                self.slots.release()
                raise
            task = asyncio.create_task(self._serve(message))
            self._tasks.add(task)
            task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self.slots.release()

    async def _take_control(self) -> None:
        while True:
            message = await self.layer.receive(self.control_channel)
            if message.get("type") == "inference.cancel":
                self.cancel(str(message.get("request_id", "")), str(message.get("reason", "")))

    async def _heartbeat(self) -> None:
        last_group_add = time.monotonic()
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await presence.beat(self.redis, self.name)
                # Group membership expires in the channel layer (a day by default): renew it.
                if time.monotonic() - last_group_add > 3600:
                    await self.layer.group_add(self.control_group, self.control_channel)
                    last_group_add = time.monotonic()
            except (RedisError, OSError):
                log.warning("heartbeat failed; retrying", exc_info=True)

    def cancel(self, request_id: str, reason: str) -> None:
        task = self.running.get(request_id)
        if task is not None:
            log.info("cancel %s (%s)", request_id, reason)
            task.cancel()
            return
        self.early_cancels[request_id] = time.time()
        while len(self.early_cancels) > _EARLY_CANCELS_KEPT:
            self.early_cancels.popitem(last=False)

    async def _end_running(self, *, reason: str) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel(msg=reason)
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- one request ---------------------------------------------------------------------------

    async def _serve(self, message: dict) -> None:
        taken = time.monotonic()
        try:
            request = _request_adapter.validate_python(message)
        except ValidationError as exc:
            await self._reject_malformed(message, exc)
            return
        request_id = request["request_id"]
        if self.early_cancels.pop(request_id, None) is not None:
            self._log(request_id, "cancelled", taken, note="before start")
            return
        if time.time() > request["deadline"]:
            await self._send(request, events.inference_error(
                request_id=request_id, code=Code.EXPIRED,
                message="The request waited past its deadline.",
            ))
            self._log(request_id, "expired", taken)
            return
        self.running[request_id] = asyncio.current_task()
        metrics.ACTIVE.inc()
        try:
            await self._generate(request, taken)
        finally:
            metrics.ACTIVE.dec()
            self.running.pop(request_id, None)

    async def _generate(self, request: events.InferenceRequest, taken: float) -> None:
        request_id = request["request_id"]
        sampling = request["sampling"]
        first_at = None
        completion_tokens = 0
        prompt_tokens = 0
        finish_reason = None
        outcome = "error"
        trimmed = 0
        try:
            budget = self.engine.max_model_len - sampling["max_tokens"]
            messages, trimmed = await asyncio.to_thread(
                fit_to_budget, request["messages"],
                lambda msgs: len(self.engine.prompt_token_ids(msgs)), budget,
            )
            prompt_ids = await asyncio.to_thread(self.engine.prompt_token_ids, messages)
            prompt_tokens = len(prompt_ids)
            await self._send(request, events.inference_start(
                request_id=request_id, worker=self.name, model=self.engine.model_name
            ))
            async with asyncio.timeout(max(0.0, request["deadline"] - time.time())):
                stream = self.engine.stream(request_id, prompt_ids, sampling)
                async for chunk in coalesce(stream, self.interval):
                    completion_tokens += chunk.token_count
                    finish_reason = chunk.finish_reason or finish_reason
                    if chunk.text:
                        if first_at is None:
                            first_at = time.monotonic()
                        await self._send(request, events.inference_delta(
                            request_id=request_id, text=chunk.text
                        ))
            await self._send(request, events.inference_done(
                request_id=request_id, finish_reason=finish_reason or "stop",
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                ttft_ms=None if first_at is None else round((first_at - taken) * 1000),
                total_ms=round((time.monotonic() - taken) * 1000),
            ))
            outcome = "done"
        except asyncio.CancelledError:
            # Cancelled by the consumer (customer left, deadline) or by shutdown.
            await self.engine.abort(request_id)
            outcome = "cancelled" if not self.stopping.is_set() else "shutdown"
            if outcome == "shutdown":
                await self._send_quietly(request, events.inference_error(
                    request_id=request_id, code=Code.ENGINE, message="The worker is stopping.",
                ))
        except TimeoutError:
            await self.engine.abort(request_id)
            outcome = "expired"
            await self._send_quietly(request, events.inference_error(
                request_id=request_id, code=Code.EXPIRED,
                message="The answer ran past its deadline.",
            ))
        except ContextOverflow as exc:
            outcome = "overflow"
            await self._send_quietly(request, events.inference_error(
                request_id=request_id, code=Code.CONTEXT_OVERFLOW, message=str(exc),
            ))
        except ChannelFull:
            # The consumer stopped reading without cancelling (its process died): nobody
            # wants the rest.
            await self.engine.abort(request_id)
            outcome = "abandoned"
        except Exception as exc:
            log.exception("request %s failed", request_id)
            await self.engine.abort(request_id)
            await self._send_quietly(request, events.inference_error(
                request_id=request_id, code=Code.ENGINE, message=exc.__class__.__name__,
            ))
        finally:
            metrics.REQUESTS.labels(outcome).inc()
            metrics.COMPLETION_TOKENS.inc(completion_tokens)
            metrics.PROMPT_TOKENS.inc(prompt_tokens)
            metrics.TRIMMED_TURNS.inc(trimmed)
            if first_at is not None:
                metrics.TTFT.observe(first_at - taken)
            metrics.DURATION.observe(time.monotonic() - taken)
            self._log(request_id, outcome, taken, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, trimmed=trimmed,
                      ttft=None if first_at is None else first_at - taken,
                      finish=finish_reason)

    async def _reject_malformed(self, message: dict, exc: ValidationError) -> None:
        metrics.REQUESTS.labels("bad_request").inc()
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
        log.warning("malformed request dropped (fields: %s)", fields)
        reply = message.get("reply_channel") if isinstance(message, dict) else None
        if isinstance(reply, str) and reply:
            try:
                await self.layer.send(reply, events.inference_error(
                    request_id=str(message.get("request_id", ""))[:64], code=Code.BAD_REQUEST,
                    message=f"Malformed inference request: {fields}",
                ))
            except Exception:  # noqa: BLE001 - a bad reply channel is the sender's problem
                log.warning("could not report the malformed request to %r", reply[:100])

    async def _send(self, request: events.InferenceRequest, event: dict) -> None:
        await self.layer.send(request["reply_channel"], event)
        # redis-py can lose a cancellation that lands while a command is under way: the
        # command completes and the CancelledError never surfaces. Re-raise it here, or a
        # cancelled stream would run on until its next await happens to notice.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def _send_quietly(self, request: events.InferenceRequest, event: dict) -> None:
        try:
            await self.layer.send(request["reply_channel"], event)
        except Exception:  # noqa: BLE001 - best effort: the consumer's deadline covers it
            log.warning("could not send %s for %s", event["type"], request["request_id"])

    def _log(self, request_id: str, outcome: str, taken: float, **fields) -> None:
        details = " ".join(
            f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
            for key, value in fields.items() if value is not None
        )
        log.info("request %s %s in %.3fs %s", request_id, outcome, time.monotonic() - taken,
                 details)
