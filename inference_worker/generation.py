"""One answer, from the prompt to its last event: fit the prompt to the token budget, generate,
coalesce the deltas, apply the request's guards, read tool calls, and send `start`, deltas and
exactly one `done` or `error` to the answer run that asked. Every way an answer ends has a named
outcome, counted in the metrics and logged.
"""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

from inference_worker import metrics, protocol
from inference_worker.budget import ContextOverflow, fit_grounded
from inference_worker.coalesce import coalesce
from inference_worker.engines import Engine
from inference_worker.protocol import InferenceErrorCode as Code
from inference_worker.replies import Overloaded, RedisLost, Replies
from inference_worker.request_log import log_request
from inference_worker.streams import Stream
from inference_worker.textguards import AnswerLimit, StreamGuard
from inference_worker.tool_calls import Ending, ToolCallHold
from inference_worker.tool_choice import ToolRequestError, ToolUse

log = logging.getLogger("inference_worker")


def _stream_guard(request: protocol.InferenceRequest) -> StreamGuard | None:
    guards = request.get("guards")
    if not guards:
        return None
    limit = None
    if guards["max_words"] > 0 or guards["max_han"] > 0:
        limit = AnswerLimit(words=guards["max_words"] or 10**9, han=guards["max_han"] or 10**9)
    return StreamGuard(loops=guards["loops"], limit=limit)


async def generate_answer(
    stream: Stream,
    taken: float,
    *,
    engine: Engine,
    worker_name: str,
    replies: Replies,
    interval: Callable[[], float],
    stopping: asyncio.Event,
    on_done: Callable[[float], None],
    tool_use: ToolUse | None = None,
) -> None:
    """Generate the answer to `stream`'s request (taken at monotonic time `taken`) and send it.
    `interval` gives the coalescing interval of the moment; `stopping` tells a shutdown from a
    cancel; `on_done` gets the seconds a whole answer took (the worker's turnover); `tool_use`:
    the functions the answer may call (inference_worker.tool_choice)."""
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
        budget = engine.max_model_len - sampling["max_tokens"]
        tokenize = engine.prompt_token_ids
        if tool_use is not None:
            tokenize = functools.partial(engine.prompt_token_ids, tools=tool_use.tools)
        # One tokenizer pass: the budget search returns the ids of the prompt it kept.
        _, trimmed, prompt_ids, passages = await asyncio.to_thread(
            fit_grounded, request["messages"], tokenize, budget, request.get("grounding")
        )
        prompt_tokens = len(prompt_ids)
        await replies.send(
            stream,
            protocol.inference_start(
                request_id=request_id,
                worker=worker_name,
                model=engine.model_name,
                trimmed=trimmed,
                passages=passages,
            ),
        )
        guard = _stream_guard(request)
        hold = None
        if tool_use is not None:
            hold = ToolCallHold(tool_use.names, parallel=tool_use.parallel)
        kept = None
        sent_any = False
        async with asyncio.timeout(max(0.0, request["deadline"] - time.time())):
            if tool_use is None:
                source = engine.stream(request_id, prompt_ids, sampling)
            else:
                source = engine.stream(request_id, prompt_ids, sampling, tool_use)
            # Closed on every way out (a guard's stop included), so the engine's own
            # clean-up runs now rather than when the generator is collected.
            async with contextlib.aclosing(coalesce(source, interval)) as chunks:
                async for chunk in chunks:
                    completion_tokens += chunk.token_count
                    finish_reason = chunk.finish_reason or finish_reason
                    if not chunk.text:
                        continue
                    if first_at is None:
                        first_at = time.monotonic()
                    text = chunk.text if hold is None else hold.feed(chunk.text)
                    if not text and sent_any:
                        continue
                    # An empty first delta: output has begun, held as a possible tool call.
                    await replies.send(
                        stream, protocol.inference_delta(request_id=request_id, text=text)
                    )
                    sent_any = True
                    if text and guard is not None and guard.feed(text) is not None:
                        # A loop or an overrun: nothing after this is worth generating.
                        await engine.abort(request_id)
                        break
        if guard is not None:
            kept = guard.finished(finish_reason)
            if guard.reason is not None:
                finish_reason = guard.reason
                metrics.GUARD_STOPS.labels(guard.reason).inc()
        ending = Ending()
        if hold is not None and (guard is None or guard.reason is None):
            ending = hold.finish()
            if ending.release:
                await replies.send(
                    stream, protocol.inference_delta(request_id=request_id, text=ending.release)
                )
            elif ending.calls:
                finish_reason = protocol.TOOL_CALLS
                metrics.TOOL_CALL_ANSWERS.labels("called").inc()
            elif ending.invalid is not None:
                kept = ending.text
                metrics.TOOL_CALL_ANSWERS.labels(ending.invalid).inc()
                log.info(
                    "request %s: output written as a tool call is none (%s); sent as text",
                    request_id,
                    ending.invalid,
                )
        await replies.send(
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
                tool_calls=ending.calls,
                invalid_tool_call=ending.invalid,
            ),
            final=True,
        )
        outcome = "done"
        on_done(time.monotonic() - taken)
    except asyncio.CancelledError:
        # Cancelled by the consumer (customer left, deadline) or by shutdown.
        await engine.abort(request_id)
        outcome = "cancelled" if not stopping.is_set() else "shutdown"
        if outcome == "shutdown":
            await replies.send_quietly(
                request,
                protocol.inference_error(
                    request_id=request_id,
                    code=Code.ENGINE,
                    message="The worker is stopping.",
                ),
                stream=stream,
            )
    except TimeoutError:
        await engine.abort(request_id)
        outcome = "expired"
        await replies.send_quietly(
            request,
            protocol.inference_error(
                request_id=request_id,
                code=Code.EXPIRED,
                message="The answer ran past its deadline.",
            ),
            stream=stream,
        )
    except ToolRequestError as exc:
        # A parameters schema the engine's grammar cannot follow.
        outcome = "bad_request"
        await replies.send_quietly(
            request,
            protocol.inference_error(
                request_id=request_id, code=Code.BAD_REQUEST, message=str(exc)
            ),
            stream=stream,
        )
    except ContextOverflow as exc:
        outcome = "overflow"
        await replies.send_quietly(
            request,
            protocol.inference_error(
                request_id=request_id,
                code=Code.CONTEXT_OVERFLOW,
                message=str(exc),
            ),
            stream=stream,
        )
    except Overloaded:
        await engine.abort(request_id)
        outcome = "overloaded"
        log.warning(
            "request %s aborted: reply channel %s stayed full (its web process is overloaded)",
            request_id,
            stream.process,
        )
        # Perhaps it drained meanwhile: then the consumer learns why the answer ended.
        await replies.send_quietly(
            request,
            protocol.inference_error(
                request_id=request_id,
                code=Code.OVERLOADED,
                message="The reply channel stayed full; the answer was aborted.",
            ),
            stream=stream,
            failure_level=logging.INFO,
        )
    except RedisLost as exc:
        await engine.abort(request_id)
        outcome = "redis_lost"
        log.warning(
            "request %s aborted: Redis failed under it (%s)",
            request_id,
            exc.__cause__.__class__.__name__,
        )
        await replies.send_quietly(
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
        await engine.abort(request_id)
        await replies.send_quietly(
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
        log_request(
            request_id,
            outcome,
            taken,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            trimmed=trimmed,
            ttft=None if first_at is None else first_at - taken,
            finish=finish_reason,
        )
