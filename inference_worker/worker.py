"""The request loop: take requests from the shared channel, stream each answer to the answer
run that asked.

Each request goes to exactly one worker (the channel layer's receive), so more workers scale
out with no code change. A worker takes a request only when it has a free slot, leaving the
rest in Redis for any other worker. Cancellations are group-sent to every worker, because an
answer run does not know which one took its request.

Redis is transport only, and it may restart under a running worker: every loop retries with
backoff instead of dying, and once Redis answers again the worker announces itself and joins
the control group at once (a restarted Redis has forgotten both). An answer whose sends fail
is aborted in the engine; its answer run's deadline answers the customer.

Beside this module: `generation` (one answer, start to end), `replies` (sending to the answer
runs), `streams` (a taken request's state), `redis_retry` (the loops' backoff) and `request_log`.
"""

import asyncio
import logging
import os
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from channels.layers import BaseChannelLayer
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis

from inference_worker import metrics, pool, protocol
from inference_worker.coalesce import adaptive_interval
from inference_worker.engines import Engine
from inference_worker.generation import generate_answer
from inference_worker.protocol import InferenceErrorCode as Code
from inference_worker.redis_retry import REDIS_DOWN, RedisRetry
from inference_worker.replies import LAST_WORD_TIMEOUT, Replies
from inference_worker.request_log import log_request
from inference_worker.streams import Stream, process_of
from inference_worker.tool_choice import ToolRequestError, tool_use_of
from runtime.cancellation import raise_if_cancelled

log = logging.getLogger("inference_worker")

_request_adapter = TypeAdapter(protocol.InferenceRequest)
# Remember cancellations that arrive before their request (it is still queued in Redis).
_EARLY_CANCELS_KEPT = 10_000
# Remember the ids of requests taken: channels-redis can deliver a message twice when Redis
# fails just after a receive (it restores its in-flight backup), and an answer must not run
# twice.
_TAKEN_IDS_KEPT = 10_000
_TURNOVER_WEIGHT = 0.2  # of the newest answer in the moving average of answer durations
# How often a worker renews its control-group membership when nothing else calls for it: far
# inside channels-redis's group_expiry (a day), and a round trip a minute is nothing.
GROUP_RENEW_SECONDS = 60.0


class InferenceWorker:
    def __init__(
        self,
        *,
        engine: Engine,
        channel_layer: BaseChannelLayer,
        redis: Redis,
        channel: str,
        control_group: str,
        max_concurrency: int,
        coalesce_ms: int,
        heartbeat_seconds: float,
        keepalive_seconds: float | None = None,
        name: str | None = None,
    ):
        self.engine = engine
        self.layer = channel_layer
        self.redis = redis
        self.channel = channel
        self.control_group = control_group
        self.max_concurrency = max_concurrency
        self.slots = asyncio.Semaphore(max_concurrency)
        self.interval = coalesce_ms / 1000
        self.heartbeat_seconds = heartbeat_seconds
        if keepalive_seconds is None:
            from django.conf import settings

            keepalive_seconds = settings.INFERENCE["KEEPALIVE_SECONDS"]
        self.keepalive_seconds = keepalive_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.turnover: float | None = None  # seconds per whole answer lately, per slot
        self.running: dict[str, Stream] = {}
        # Running streams per web process: the coalescing interval grows with it.
        self.streams_per_process: Counter[str] = Counter()
        self.replies = Replies(channel_layer)
        self._free_dirty = False
        self._busy = asyncio.Event()  # set while a request runs: the keepalive ticker's cue
        # Monotonic time of the last control-group join; None: join at the next beat.
        self._joined_at: float | None = None
        self._free_reporter: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()  # strong references: asyncio keeps only weak ones
        self.early_cancels: OrderedDict[str, float] = OrderedDict()
        self.taken_ids: OrderedDict[str, None] = OrderedDict()
        self.stopping = asyncio.Event()
        self.control_channel = ""
        # Set by a loop that lost Redis: the heartbeat then retries at once, so that presence
        # and the control group are restored as soon as Redis answers again.
        self._redis_trouble = asyncio.Event()

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Serve until `stop()`; then end every running request with an error."""
        self.control_channel = await self.layer.new_channel()
        try:
            await self._announce()
        except REDIS_DOWN as exc:
            # The heartbeat keeps trying; requests are taken once Redis answers.
            log.warning("Redis unreachable at start (%s); retrying", exc.__class__.__name__)
            self._redis_trouble.set()
        loops = [
            asyncio.create_task(self._take_requests(), name="requests"),
            asyncio.create_task(self._take_control(), name="control"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        if self.keepalive_seconds > 0:  # 0 switches keepalives off
            loops.append(asyncio.create_task(self._keepalives(), name="keepalives"))
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

    def _count_turnover(self, seconds: float) -> None:
        """How long a slot takes per whole answer lately (a moving average over about the
        last ten): consumers admit to the queue only what this says will start in time."""
        self.turnover = (
            seconds
            if self.turnover is None
            else (self.turnover + _TURNOVER_WEIGHT * (seconds - self.turnover))
        )

    async def _announce(self) -> int:
        """Tell Redis this worker is alive and listening (every step is idempotent); the
        requests waiting in its channel. One round trip, and a second one now and then for the
        control group."""
        beat = await pool.beat(
            self.redis,
            self.name,
            self.max_concurrency,
            self.turnover,
            free=self.max_concurrency - len(self.running),
            queue_of=self.channel,
        )
        # The membership is renewed when the beat finds the worker new to Redis (a restarted
        # Redis has forgotten both), after trouble with Redis (the heartbeat forgets the last
        # join), and every GROUP_RENEW_SECONDS, since channels-redis drops a member
        # group_expiry (a day) after its last join.
        now = time.monotonic()
        if beat.arrived or self._joined_at is None or now - self._joined_at >= GROUP_RENEW_SECONDS:
            await self.layer.group_add(self.control_group, self.control_channel)
            self._joined_at = now
        return beat.queued or 0

    async def _leave(self) -> None:
        try:
            async with asyncio.timeout(LAST_WORD_TIMEOUT):
                await pool.leave(self.redis, self.name)
                await self.layer.group_discard(self.control_group, self.control_channel)
        except (*REDIS_DOWN, TimeoutError):
            log.warning("could not deregister from Redis; it expires by itself")

    # --- loops ---------------------------------------------------------------------------------

    async def _take_requests(self) -> None:
        retry = RedisRetry("taking requests", self._redis_trouble.set)
        while True:
            await self.slots.acquire()
            try:
                message = await self.layer.receive(self.channel)
            except REDIS_DOWN as exc:
                self.slots.release()
                await retry.failed(exc)
                continue
            except BaseException:
                self.slots.release()
                raise
            retry.succeeded()
            task = asyncio.create_task(self._serve(message))
            self._tasks.add(task)
            task.add_done_callback(self._served)
            # Served (the stop ends it with an error its consumer hears), then stop taking.
            raise_if_cancelled()

    def _served(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("request task failed", exc_info=task.exception())

    async def _take_control(self) -> None:
        retry = RedisRetry("control channel", self._redis_trouble.set)
        while True:
            try:
                message = await self.layer.receive(self.control_channel)
            except REDIS_DOWN as exc:
                await retry.failed(exc)
                continue
            retry.succeeded()
            if message.get("type") == "inference.cancel":
                self.cancel(str(message.get("request_id", "")), str(message.get("reason", "")))
            raise_if_cancelled()

    async def _heartbeat(self) -> None:
        retry = RedisRetry("heartbeat", lambda: None)
        while True:
            if self._redis_trouble.is_set():
                self._joined_at = None  # rejoin: Redis may have restarted
            self._redis_trouble.clear()
            try:
                metrics.QUEUE_LENGTH.set(await self._announce())
            except REDIS_DOWN as exc:
                metrics.REDIS_UP.set(0)
                self._joined_at = None
                await retry.failed(exc)
                continue
            metrics.REDIS_UP.set(1)
            retry.succeeded()
            raise_if_cancelled()
            # Sleep until the next beat, or until another loop reports Redis trouble.
            try:
                async with asyncio.timeout(self.heartbeat_seconds):
                    await self._redis_trouble.wait()
            except TimeoutError:
                pass

    async def _keepalives(self) -> None:
        """One ticker for every running request: a request that has sent nothing for
        keepalive_seconds gets an `inference.keepalive`, so its consumer can tell a long
        prefill or a pause from a dead worker. It sleeps while nothing runs."""
        while True:
            await self._busy.wait()
            await asyncio.sleep(self.keepalive_seconds / 4)
            now = time.monotonic()
            for stream in list(self.running.values()):
                if stream.ending or (stream.keepalive is not None and not stream.keepalive.done()):
                    continue
                if now - stream.last_sent >= self.keepalive_seconds:
                    stream.last_sent = now
                    stream.keepalive = asyncio.create_task(self.replies.send_keepalive(stream))

    def cancel(self, request_id: str, reason: str) -> None:
        stream = self.running.get(request_id)
        if stream is not None:
            log.info("cancel %s (%s)", request_id, reason)
            stream.task.cancel()
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
        now = time.time()
        try:
            request = _request_adapter.validate_python(message)
        except ValidationError as exc:
            await self.replies.reject_malformed(message, exc)
            return
        try:
            tool_use = tool_use_of(request)
        except ToolRequestError as exc:
            await self.replies.reject_request(request, str(exc))
            return
        request_id = request["request_id"]
        if request_id in self.taken_ids:
            metrics.REQUESTS.labels("duplicate").inc()
            log.warning("request %s delivered twice; the second copy is dropped", request_id)
            return
        self.taken_ids[request_id] = None
        while len(self.taken_ids) > _TAKEN_IDS_KEPT:
            self.taken_ids.popitem(last=False)
        # Clocks of two machines: a small skew must not make a negative wait.
        metrics.QUEUE_WAIT.observe(max(0.0, now - request["queued_at"]))
        if self.early_cancels.pop(request_id, None) is not None:
            metrics.REQUESTS.labels("cancelled").inc()
            log_request(request_id, "cancelled", taken, note="before start")
            return
        if now > request["start_by"] or now > request["deadline"]:
            # The consumer has answered with the fallback already: spend nothing on it.
            metrics.REQUESTS.labels("expired").inc()
            await self.replies.send_quietly(
                request,
                protocol.inference_error(
                    request_id=request_id,
                    code=Code.EXPIRED,
                    message="The request waited in the queue past its start-by time.",
                ),
            )
            log_request(request_id, "expired", taken, waited=now - request["queued_at"])
            return
        stream = Stream(
            request=request,
            task=asyncio.current_task(),
            process=process_of(request["reply_channel"]),
            last_sent=taken,
        )
        self.running[request_id] = stream
        self._free_slots_changed()
        self.streams_per_process[stream.process] += 1
        metrics.ACTIVE.inc()
        try:
            await generate_answer(
                stream,
                taken,
                engine=self.engine,
                worker_name=self.name,
                replies=self.replies,
                interval=self._interval_for(stream),
                stopping=self.stopping,
                on_done=self._count_turnover,
                tool_use=tool_use,
            )
        finally:
            metrics.ACTIVE.dec()
            self.running.pop(request_id, None)
            self._free_slots_changed()
            self.streams_per_process[stream.process] -= 1
            if self.streams_per_process[stream.process] <= 0:
                del self.streams_per_process[stream.process]

    def _interval_for(self, stream: Stream) -> Callable[[], float]:
        return lambda: adaptive_interval(self.streams_per_process[stream.process], self.interval)

    # --- free slots ----------------------------------------------------------------------------

    def _free_slots_changed(self) -> None:
        """Tell admission control at once, not at the next beat, how many slots are free: a
        burst takes the free slots in a moment, and a count a second old would let as many
        again into the queue behind them."""
        if self.running:
            self._busy.set()
        else:
            self._busy.clear()
        self._free_dirty = True
        if self._free_reporter is None or self._free_reporter.done():
            self._free_reporter = asyncio.create_task(self._report_free())

    async def _report_free(self) -> None:
        while self._free_dirty:
            self._free_dirty = False
            try:
                await pool.set_free(self.redis, self.name, self.max_concurrency - len(self.running))
            except REDIS_DOWN:
                return  # the next beat says it
            raise_if_cancelled()
