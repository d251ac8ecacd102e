"""`python manage.py run_inference_worker`: load the model into vLLM and serve requests (or,
with INFERENCE_BACKEND=remote, drive remote vLLM servers: inference_worker/remote_engine.py).

Start it through manage.py (not django-admin): vLLM's engine processes import manage.py, and
there they tie themselves to this process, so that they end with it however it ends (see
inference_worker/lifeline.py).
"""

import asyncio
import logging
import os
import signal

import uvloop
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand
from prometheus_client import start_http_server

from inference_worker import deathwatch, lifeline
from inference_worker.engines import build_engine
from inference_worker.worker import InferenceWorker
from runtime.redis_client import get_redis
from runtime.startup_objects import freeze_startup_objects

log = logging.getLogger("inference_worker")


class Command(BaseCommand):
    help = "Run an inference worker: vLLM in this process or remote, requests from Redis."

    def handle(self, *args, **options):
        cfg = settings.INFERENCE
        if os.environ.get(lifeline.PARENT_PID_ENV) != str(os.getpid()):
            log.warning(
                "not started through manage.py: if this process is killed outright, "
                "vLLM's engine processes will outlive it"
            )
        if cfg["METRICS_PORT"]:
            # Serves the default registry: vLLM's vllm:* metrics and this worker's cs_worker_*.
            start_http_server(cfg["METRICS_PORT"], addr=cfg["METRICS_HOST"])
        engine = build_engine(cfg)
        try:
            # libuv's loop, as vLLM's own OpenAI server uses. Measured with the pipeline's
            # synthetic engine on 2 CPU cores: ~13 % less of the worker's CPU per streamed
            # delta, every cycle of which an engine computing on all cores would have had.
            uvloop.run(self._serve(engine, cfg))
        finally:
            engine.shutdown()
        self.stdout.write("inference worker stopped")

    async def _serve(self, engine, cfg) -> None:
        await engine.load_tokenizer()
        try:
            await serve(engine)
        finally:
            # A remote engine's connections and health checks live on this event loop.
            aclose = getattr(engine, "aclose", None)
            if aclose is not None:
                await aclose()


async def serve(engine, *, max_concurrency: int | None = None, name: str | None = None) -> None:
    """Serve requests from the channel layer with `engine` until SIGINT or SIGTERM."""
    cfg = settings.INFERENCE
    worker = InferenceWorker(
        engine=engine,
        channel_layer=get_channel_layer(),
        redis=get_redis(),
        channel=cfg["CHANNEL"],
        control_group=cfg["CONTROL_GROUP"],
        max_concurrency=max_concurrency or cfg["MAX_CONCURRENCY"],
        coalesce_ms=cfg["COALESCE_MS"],
        heartbeat_seconds=cfg["HEARTBEAT_SECONDS"],
        name=name,
    )
    # Before the worker announces itself: from then on its death, however it comes, takes it
    # out of the presence at once (inference_worker/deathwatch.py).
    deathwatch.start(settings.REDIS_URL, worker.name)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, worker.stop)
    # The engine and the model libraries are loaded: out of every later full collection.
    freeze_startup_objects()
    await worker.run()
