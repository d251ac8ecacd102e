"""`python -m bench.synthetic_worker`: the real worker loop on a synthetic answer that keeps to
an absolute schedule, for the pipeline benchmark.

Why not `manage.py run_synthetic_worker`: its engine sleeps `len(word) / rate` between words,
so every timer overshoot (epoll waits in whole milliseconds, plus the loop's own latency under
hundreds of streams) adds up over an answer: after 200 words the last one is due 100+ ms late
before the pipeline has touched it, and that would be counted as the pipeline's delta lag. Here
word i is yielded at the answer's start + its place in the schedule, so lateness never
accumulates, and the start is recorded (wall clock, in Redis under the message's tag): the load
generator then measures each delta against when this engine produced its words. Everything else
is the product's worker (`serve`: channel, presence, coalescing, cancellation, metrics).
"""

import argparse
import asyncio
import os
import time

import django
import uvloop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, required=True)
    parser.add_argument("--chars-per-second", type=float, required=True)
    parser.add_argument("--max-concurrency", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_site.settings")
    django.setup()
    uvloop.run(_serve(args))  # the product worker's loop (run_inference_worker)


def _engine_class():
    # Imported after django.setup(), like every product module the worker uses.
    from bench.synthetic import STARTS_KEY, TAG_PATTERN, answer_text, pieces, schedule
    from inference_worker.coalesce import Chunk
    from inference_worker.synthetic import SyntheticEngine

    class ScheduledEngine(SyntheticEngine):
        def __init__(self, *, redis, words: int, chars_per_second: float):
            super().__init__(
                reply=answer_text(words), tokens_per_second=chars_per_second, max_model_len=100_000
            )
            self.redis = redis
            self.text = answer_text(words)

        async def stream(self, request_id, prompt_token_ids, sampling):
            prompt = "".join(map(chr, prompt_token_ids))
            tag = TAG_PATTERN.search(prompt)
            text = self.text[: sampling["max_tokens"]]
            words, due = pieces(text), schedule(text, self.tokens_per_second)
            loop = asyncio.get_running_loop()
            start, started_wall = loop.time(), time.time()
            self._active.add(request_id)
            try:
                for index, word in enumerate(words):
                    delay = start + due[index] - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    last = index == len(words) - 1
                    yield Chunk(
                        text=word,
                        token_count=len(word),
                        finish_reason="length"
                        if last and text != self.text
                        else "stop"
                        if last
                        else None,
                        prompt_tokens=len(prompt_token_ids),
                    )
                # Recorded after the answer, off its hot path (one Redis write per answer).
                if tag is not None:
                    await self.redis.hset(STARTS_KEY, tag.group(1), repr(started_wall))
            finally:
                self._active.discard(request_id)

    return ScheduledEngine


async def _serve(args) -> None:
    from prometheus_client import start_http_server

    from inference_worker.management.commands.run_inference_worker import serve
    from runtime.redis_client import get_redis

    start_http_server(args.metrics_port, addr="127.0.0.1")
    engine = _engine_class()(
        redis=get_redis(), words=args.words, chars_per_second=args.chars_per_second
    )
    await serve(engine, max_concurrency=args.max_concurrency, name="bench-synthetic")


if __name__ == "__main__":
    main()
