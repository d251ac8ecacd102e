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
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from inference_worker import metrics, pool, protocol
from inference_worker.budget import ContextOverflow, fit_grounded
from inference_worker.coalesce import adaptive_interval, coalesce
from inference_worker.engines import Engine
from inference_worker.mailbox import Mailbox
from inference_worker.protocol import InferenceErrorCode as Code
from inference_worker.textguards import AnswerLimit, StreamGuard
from runtime.cancellation import raise_if_cancelled

log = logging.getLogger("inference_worker")

_request_adapter = TypeAdapter(protocol.InferenceRequest)
# Remember cancellations that arrive before their request (it is still queued in Redis).
_EARLY_CANCELS_KEPT = 10_000
# Remember the ids of requests taken: channels-redis can deliver a message twice when Redis
# fails just after a receive (it restores its in-flight backup), and an answer must not run
# twice.
_TAKEN_IDS_KEPT = 10_000
# What the channel layer raises when Redis is unreachable or restarting (redis-py's
# ConnectionError and TimeoutError are RedisErrors; socket errors are OSErrors).
_REDIS_DOWN = (RedisError, OSError)
# Retry delays while Redis is unreachable: quick at first (a restart takes well under a
# second), then every 2 s so that a long outage does not spin.
_FIRST_RETRY, _LAST_RETRY = 0.1, 2.0
_TURNOVER_WEIGHT = 0.2  # of the newest answer in the moving average of answer durations
# A consumer's channel that is full means its web process reads slower than the workers
# write (overload), not that it died (then the consumer's cancel or the channel's expiry
# ends it): wait for it to drain for ~1 s in all before giving up on the answer.
_FULL_CHANNEL_DELAYS = (0.05, 0.1, 0.2, 0.3, 0.4)
# A last error frame to a consumer is worth this long at most: its deadline covers the rest.
_LAST_WORD_TIMEOUT = 2.0


class _RedisLost(Exception):
    """A send to the consumer failed because Redis did not answer."""


class _Overloaded(Exception):
    """The consumer's channel stayed full through every retry."""


@dataclass(eq=False)
class _Stream:
    """One request from the moment it is taken until its last event is sent."""

    request: protocol.InferenceRequest
    task: asyncio.Task
    process: str  # the reply channel's web process: the part before '!'
    last_sent: float  # monotonic time of the last event sent to the consumer
    ending: bool = False  # the final event is on its way: no keepalive after it
    keepalive: asyncio.Task | None = field(default=None)

    @property
    def request_id(self) -> str:
        return self.request["request_id"]


class _Retry:
    """Backoff for one loop while Redis is unreachable, with one warning per outage."""

    def __init__(self, what: str, on_failure: Callable[[], None]):
        self.what = what
        self.on_failure = on_failure
        self.delay = _FIRST_RETRY
        self.failing = False

    async def failed(self, exc: BaseException) -> None:
        raise_if_cancelled()  # redis-py reports a cancellation mid-read as a lost connection
        if not self.failing:
            self.failing = True
            metrics.REDIS_OUTAGES.inc()
            log.warning(
                "%s: Redis unreachable (%s: %s); retrying", self.what, exc.__class__.__name__, exc
            )
        self.on_failure()
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, _LAST_RETRY)

    def succeeded(self) -> None:
        if self.failing:
            log.info("%s: Redis reachable again", self.what)
        self.failing = False
        self.delay = _FIRST_RETRY


def _process_of(reply_channel: str) -> str:
    return reply_channel.partition("!")[0]


def _stream_guard(request: protocol.InferenceRequest) -> StreamGuard | None:
    guards = request.get("guards")
    if not guards:
        return None
    limit = None
    if guards["max_words"] > 0 or guards["max_han"] > 0:
        limit = AnswerLimit(words=guards["max_words"] or 10**9, han=guards["max_han"] or 10**9)
    return StreamGuard(loops=guards["loops"], limit=limit)


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
        self.running: dict[str, _Stream] = {}
        # Running streams per web process: the coalescing interval grows with it.
        self.streams_per_process: Counter[str] = Counter()
        # Stream events bound for each web process, bundled when they meet.
        self.mailboxes: dict[str, Mailbox] = {}
        self._free_dirty = False
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
        except _REDIS_DOWN as exc:
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

    async def _announce(self) -> None:
        """Tell Redis this worker is alive and listening; every step is idempotent."""
        await pool.beat(
            self.redis,
            self.name,
            self.max_concurrency,
            self.turnover,
            free=self.max_concurrency - len(self.running),
        )
        # Renewed at every beat: a restarted Redis has forgotten the membership, and
        # channels-redis drops a member group_expiry (a day) after its last join.
        await self.layer.group_add(self.control_group, self.control_channel)

    async def _leave(self) -> None:
        try:
            async with asyncio.timeout(_LAST_WORD_TIMEOUT):
                await pool.leave(self.redis, self.name)
                await self.layer.group_discard(self.control_group, self.control_channel)
        except (*_REDIS_DOWN, TimeoutError):
            log.warning("could not deregister from Redis; it expires by itself")

    # --- loops ---------------------------------------------------------------------------------

    async def _take_requests(self) -> None:
        retry = _Retry("taking requests", self._redis_trouble.set)
        while True:
            await self.slots.acquire()
            try:
                message = await self.layer.receive(self.channel)
            except _REDIS_DOWN as exc:
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
        retry = _Retry("control channel", self._redis_trouble.set)
        while True:
            try:
                message = await self.layer.receive(self.control_channel)
            except _REDIS_DOWN as exc:
                await retry.failed(exc)
                continue
            retry.succeeded()
            if message.get("type") == "inference.cancel":
                self.cancel(str(message.get("request_id", "")), str(message.get("reason", "")))
            raise_if_cancelled()

    async def _heartbeat(self) -> None:
        retry = _Retry("heartbeat", lambda: None)
        while True:
            self._redis_trouble.clear()
            try:
                await self._announce()
                metrics.QUEUE_LENGTH.set(await pool.queue_length(self.redis, self.channel))
            except _REDIS_DOWN as exc:
                metrics.REDIS_UP.set(0)
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
        prefill or a pause from a dead worker."""
        while True:
            await asyncio.sleep(self.keepalive_seconds / 4)
            now = time.monotonic()
            for stream in list(self.running.values()):
                if stream.ending or (stream.keepalive is not None and not stream.keepalive.done()):
                    continue
                if now - stream.last_sent >= self.keepalive_seconds:
                    stream.last_sent = now
                    stream.keepalive = asyncio.create_task(self._send_keepalive(stream))

    async def _send_keepalive(self, stream: _Stream) -> None:
        try:
            await self.layer.send(
                stream.request["reply_channel"],
                protocol.inference_keepalive(request_id=stream.request_id),
            )
            metrics.KEEPALIVES.inc()
        except (ChannelFull, *_REDIS_DOWN) as exc:
            # The request's own next send meets the same trouble and deals with it.
            log.debug("keepalive for %s not sent: %r", stream.request_id, exc)

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
            await self._reject_malformed(message, exc)
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
            self._log(request_id, "cancelled", taken, note="before start")
            return
        if now > request["start_by"] or now > request["deadline"]:
            # The consumer has answered with the fallback already: spend nothing on it.
            metrics.REQUESTS.labels("expired").inc()
            await self._send_quietly(
                request,
                protocol.inference_error(
                    request_id=request_id,
                    code=Code.EXPIRED,
                    message="The request waited in the queue past its start-by time.",
                ),
            )
            self._log(request_id, "expired", taken, waited=now - request["queued_at"])
            return
        stream = _Stream(
            request=request,
            task=asyncio.current_task(),
            process=_process_of(request["reply_channel"]),
            last_sent=taken,
        )
        self.running[request_id] = stream
        self._free_slots_changed()
        self.streams_per_process[stream.process] += 1
        metrics.ACTIVE.inc()
        try:
            await self._generate(stream, taken)
        finally:
            metrics.ACTIVE.dec()
            self.running.pop(request_id, None)
            self._free_slots_changed()
            self.streams_per_process[stream.process] -= 1
            if self.streams_per_process[stream.process] <= 0:
                del self.streams_per_process[stream.process]

    def _interval_for(self, stream: _Stream) -> Callable[[], float]:
        return lambda: adaptive_interval(self.streams_per_process[stream.process], self.interval)

    async def _generate(self, stream: _Stream, taken: float) -> None:
        request = stream.request
        request_id = request["request_id"]
        sampling = request["sampling"]
        first_at = None
        completion_tokens = 0
        prompt_tokens = 0
        finish_reason = None
        outcome = "error"
        trimmed = passages = 0
        try:
            budget = self.engine.max_model_len - sampling["max_tokens"]
            # One tokenizer pass: the budget search returns the ids of the prompt it kept.
            _, trimmed, prompt_ids, passages = await asyncio.to_thread(
                fit_grounded,
                request["messages"],
                self.engine.prompt_token_ids,
                budget,
                request.get("grounding"),
            )
            prompt_tokens = len(prompt_ids)
            await self._send(
                stream,
                protocol.inference_start(
                    request_id=request_id,
                    worker=self.name,
                    model=self.engine.model_name,
                    trimmed=trimmed,
                    passages=passages,
                ),
            )
            guard = _stream_guard(request)
            kept = None
            async with asyncio.timeout(max(0.0, request["deadline"] - time.time())):
                source = self.engine.stream(request_id, prompt_ids, sampling)
                # Closed on every way out (a guard's stop included), so the engine's own
                # clean-up runs now rather than when the generator is collected.
                async with contextlib.aclosing(
                    coalesce(source, self._interval_for(stream))
                ) as chunks:
                    async for chunk in chunks:
                        completion_tokens += chunk.token_count
                        finish_reason = chunk.finish_reason or finish_reason
                        if not chunk.text:
                            continue
                        if first_at is None:
                            first_at = time.monotonic()
                        await self._send(
                            stream, protocol.inference_delta(request_id=request_id, text=chunk.text)
                        )
                        if guard is not None and guard.feed(chunk.text) is not None:
                            # A loop or an overrun: nothing after this is worth generating.
                            await self.engine.abort(request_id)
                            break
            if guard is not None:
                kept = guard.finished(finish_reason)
                if guard.reason is not None:
                    finish_reason = guard.reason
                    metrics.GUARD_STOPS.labels(guard.reason).inc()
            await self._send(
                stream,
                protocol.inference_done(
                    request_id=request_id,
                    finish_reason=finish_reason or "stop",
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    ttft_ms=None if first_at is None else round((first_at - taken) * 1000),
                    total_ms=round((time.monotonic() - taken) * 1000),
                    trimmed=trimmed,
                    passages=passages,
                    text=kept,
                ),
                final=True,
            )
            outcome = "done"
            self._count_turnover(time.monotonic() - taken)
        except asyncio.CancelledError:
            # Cancelled by the consumer (customer left, deadline) or by shutdown.
            await self.engine.abort(request_id)
            outcome = "cancelled" if not self.stopping.is_set() else "shutdown"
            if outcome == "shutdown":
                await self._send_quietly(
                    request,
                    protocol.inference_error(
                        request_id=request_id,
                        code=Code.ENGINE,
                        message="The worker is stopping.",
                    ),
                    stream=stream,
                )
        except TimeoutError:
            await self.engine.abort(request_id)
            outcome = "expired"
            await self._send_quietly(
                request,
                protocol.inference_error(
                    request_id=request_id,
                    code=Code.EXPIRED,
                    message="The answer ran past its deadline.",
                ),
                stream=stream,
            )
        except ContextOverflow as exc:
            outcome = "overflow"
            await self._send_quietly(
                request,
                protocol.inference_error(
                    request_id=request_id,
                    code=Code.CONTEXT_OVERFLOW,
                    message=str(exc),
                ),
                stream=stream,
            )
        except _Overloaded:
            await self.engine.abort(request_id)
            outcome = "overloaded"
            log.warning(
                "request %s aborted: reply channel %s stayed full (its web process is overloaded)",
                request_id,
                stream.process,
            )
            # Perhaps it drained meanwhile: then the consumer learns why the answer ended.
            await self._send_quietly(
                request,
                protocol.inference_error(
                    request_id=request_id,
                    code=Code.OVERLOADED,
                    message="The reply channel stayed full; the answer was aborted.",
                ),
                stream=stream,
                failure_level=logging.INFO,
            )
        except _RedisLost as exc:
            await self.engine.abort(request_id)
            outcome = "redis_lost"
            log.warning(
                "request %s aborted: Redis failed under it (%s)",
                request_id,
                exc.__cause__.__class__.__name__,
            )
            await self._send_quietly(
                request,
                protocol.inference_error(
                    request_id=request_id,
                    code=Code.ENGINE,
                    message="The worker lost its connection to Redis.",
                ),
                stream=stream,
                failure_level=logging.INFO,
            )
        except Exception as exc:
            log.exception("request %s failed", request_id)
            await self.engine.abort(request_id)
            await self._send_quietly(
                request,
                protocol.inference_error(
                    request_id=request_id,
                    code=Code.ENGINE,
                    message=exc.__class__.__name__,
                ),
                stream=stream,
            )
        finally:
            metrics.REQUESTS.labels(outcome).inc()
            metrics.COMPLETION_TOKENS.inc(completion_tokens)
            metrics.PROMPT_TOKENS.inc(prompt_tokens)
            metrics.TRIMMED_TURNS.inc(trimmed)
            if first_at is not None:
                metrics.TTFT.observe(first_at - taken)
            metrics.DURATION.observe(time.monotonic() - taken)
            self._log(
                request_id,
                outcome,
                taken,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                trimmed=trimmed,
                ttft=None if first_at is None else first_at - taken,
                finish=finish_reason,
            )

    async def _reject_malformed(self, message: dict, exc: ValidationError) -> None:
        metrics.REQUESTS.labels("bad_request").inc()
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
        log.warning("malformed request dropped (fields: %s)", fields)
        reply = message.get("reply_channel") if isinstance(message, dict) else None
        if isinstance(reply, str) and reply:
            try:
                await self.layer.send(
                    reply,
                    protocol.inference_error(
                        request_id=str(message.get("request_id", ""))[:64],
                        code=Code.BAD_REQUEST,
                        message=f"Malformed inference request: {fields}",
                    ),
                )
            except Exception:  # noqa: BLE001 - a bad reply channel is the sender's problem
                log.warning("could not report the malformed request to %r", reply[:100])

    async def _end_keepalive(self, stream: _Stream) -> None:
        """No keepalive may follow the final event: stop them, and let one under way land
        first. (asyncio.wait, unlike awaiting the task, leaves it running if we are
        cancelled meanwhile.)"""
        stream.ending = True
        if stream.keepalive is not None and not stream.keepalive.done():
            await asyncio.wait({stream.keepalive})

    async def _send(self, stream: _Stream, event: dict, *, final: bool = False) -> None:
        if final:
            await self._end_keepalive(stream)
        reply = stream.request["reply_channel"]
        delays = iter(_FULL_CHANNEL_DELAYS)
        while True:
            try:
                await self._mailbox(stream.process).send(reply, event)
                break
            except ChannelFull:
                delay = next(delays, None)
                if delay is None:
                    raise _Overloaded from None
                await asyncio.sleep(delay)
            except _REDIS_DOWN as exc:
                raise _RedisLost from exc
        stream.last_sent = time.monotonic()
        # A cancellation redis-py lost would let a cancelled stream run on until its next
        # await happens to notice.
        raise_if_cancelled()

    def _free_slots_changed(self) -> None:
        """Tell admission control at once, not at the next beat, how many slots are free: a
        burst takes the free slots in a moment, and a count a second old would let as many
        again into the queue behind them."""
        self._free_dirty = True
        if self._free_reporter is None or self._free_reporter.done():
            self._free_reporter = asyncio.create_task(self._report_free())

    async def _report_free(self) -> None:
        while self._free_dirty:
            self._free_dirty = False
            try:
                await pool.set_free(self.redis, self.name, self.max_concurrency - len(self.running))
            except _REDIS_DOWN:
                return  # the next beat says it
            raise_if_cancelled()

    def _mailbox(self, process: str) -> Mailbox:
        mailbox = self.mailboxes.get(process)
        if mailbox is None:
            mailbox = self.mailboxes[process] = Mailbox(
                self.layer, on_idle=lambda: self.mailboxes.pop(process, None)
            )
        return mailbox

    async def _send_quietly(
        self,
        request: protocol.InferenceRequest,
        event: dict,
        *,
        stream: _Stream | None = None,
        failure_level: int = logging.WARNING,
    ) -> None:
        """Best effort, once, briefly: the consumer's deadline covers a lost last word.
        `failure_level` is lowered where the warning about the cause is logged already."""
        try:
            async with asyncio.timeout(_LAST_WORD_TIMEOUT):
                if stream is not None:
                    await self._end_keepalive(stream)
                await self.layer.send(request["reply_channel"], event)
        except Exception as exc:  # noqa: BLE001
            log.log(
                failure_level,
                "could not send %s for %s (%s)",
                event["type"],
                request["request_id"],
                exc.__class__.__name__,
            )

    def _log(self, request_id: str, outcome: str, taken: float, **fields) -> None:
        details = " ".join(
            f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
            for key, value in fields.items()
            if value is not None
        )
        log.info(
            "request %s %s in %.3fs %s", request_id, outcome, time.monotonic() - taken, details
        )
