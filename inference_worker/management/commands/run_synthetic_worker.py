"""`python manage.py run_synthetic_worker`: a worker on the synthetic token source.

A benchmark and test tool, never a product path: it streams made-up words at a set rate instead
of running a model, so the pipeline (Daphne, Redis, the worker loop) can be measured and tested
without the model's cost. Everything else is the real worker: channel, presence, coalescing,
cancellation, metrics.
"""

import uvloop
from django.conf import settings
from django.core.management.base import BaseCommand
from prometheus_client import start_http_server

from inference_worker.management.commands.run_inference_worker import serve
from inference_worker.synthetic import SyntheticEngine


def _words(count: int):
    text = " ".join(f"word{i}" for i in range(count))
    return lambda _prompt: text


class Command(BaseCommand):
    help = "Run an inference worker on the synthetic token source (benchmarks and tests only)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--tokens-per-second",
            type=float,
            default=50.0,
            help="characters per second each answer streams at (default 50)",
        )
        parser.add_argument(
            "--first-token-delay",
            type=float,
            default=0.0,
            help="seconds before each answer's first word (default 0)",
        )
        parser.add_argument(
            "--words", type=int, default=40, help="words in every answer (default 40)"
        )
        parser.add_argument(
            "--max-concurrency",
            type=int,
            default=None,
            help="requests at once (default INFERENCE_MAX_CONCURRENCY)",
        )
        parser.add_argument(
            "--name", default="", help="worker name in presence and logs (default: host and pid)"
        )

    def handle(self, *args, **options):
        cfg = settings.INFERENCE
        if cfg["METRICS_PORT"]:
            start_http_server(cfg["METRICS_PORT"], addr=cfg["METRICS_HOST"])
        engine = SyntheticEngine(
            reply=_words(options["words"]),
            tokens_per_second=options["tokens_per_second"],
            first_token_delay=options["first_token_delay"],
            max_model_len=cfg["MAX_MODEL_LEN"],
        )
        # The product worker's loop (run_inference_worker).
        uvloop.run(
            serve(engine, max_concurrency=options["max_concurrency"], name=options["name"] or None)
        )
        self.stdout.write("synthetic worker stopped")
