"""The marker a prepared folder carries (which embedded model, made from which source), how a
folder is recognised as complete and current, and whether an existing one may be replaced."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from pathlib import Path

from inference_worker.model_prep.errors import ModelPrepError
from inference_worker.model_prep.files import read_json, sha256, write_json
from inference_worker.model_prep.registry import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    PackagedGguf,
    SplitWheelGguf,
)
from inference_worker.model_prep.sources import locate_gguf, package_record

MARKER_NAME = ".prepared.json"
# Bump when the output of the conversion changes: folders with an older marker are redone.
# 2: the marker names the embedded model the folder holds.
PREP_FORMAT = 2

# Names a prepared folder may hold. An existing destination holding anything else is not ours
# and is never deleted (a mistyped INFERENCE_MODEL_DIR must not wipe a user's directory).
_OWN_NAMES = {
    MARKER_NAME,
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
}
# Files every prepared folder holds: checked after the conversion, and before a marker is
# trusted.
REQUIRED_NAMES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)


def read_marker(dest: Path) -> dict | None:
    """The marker of a prepared folder, or None when it is missing or unreadable."""
    return read_json(Path(dest) / MARKER_NAME)


def _versions(spec: EmbeddedModel) -> dict:
    versions = {"python": platform.python_version()}
    dists = ["torch", "transformers", "gguf", "safetensors", "accelerate"]
    if isinstance(spec.source, PackagedGguf):
        dists.append(spec.source.distribution)
    for dist in dists:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def write_marker(work: Path, spec: EmbeddedModel, source: dict) -> None:
    write_json(
        work / MARKER_NAME,
        {
            "format": PREP_FORMAT,
            "embedded_model": spec.key,
            "model": spec.folder,
            "dtype": "bfloat16",
            "source": source,
            "versions": _versions(spec),
            "files": sorted(p.name for p in work.iterdir()),
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def _marker_model(marker: dict | None) -> str | None:
    """The embedded model a marker says its folder holds (markers of format 1 only name it)."""
    if marker is None:
        return None
    key = marker.get("embedded_model")
    if isinstance(key, str):
        return key
    for spec in EMBEDDED_MODELS.values():
        if marker.get("model") == spec.folder:
            return spec.key
    return None


def marker_matches(dest: Path, spec: EmbeddedModel) -> bool:
    """True when `dest` holds a complete folder prepared for `spec` from its current source."""
    marker = read_marker(dest)
    if marker is None or marker.get("format") != PREP_FORMAT:
        return False
    if marker.get("embedded_model") != spec.key:
        return False
    recorded = marker.get("source")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), str):
        return False
    files = marker.get("files")
    if not isinstance(files, list) or not files:
        return False
    if any(not (dest / name).is_file() for name in {*files, *REQUIRED_NAMES}):
        return False
    source = spec.source
    if isinstance(source, SplitWheelGguf):
        # The joined file was checked against the pinned hash before conversion: the pinned
        # values are all that identify it, and the GGUF need not even be kept.
        return recorded.get("sha256") == source.sha256 and recorded.get("size") == source.size
    try:
        current = package_record(source, locate_gguf(source), with_sha256=False)
    except OSError:
        return False
    if recorded.get("size") != current["size"]:
        return False
    # Same size and modification time: trust the recorded hash (hashing 98 MB on every start
    # would cost a fraction of a second for nothing). Otherwise compare the content.
    if recorded.get("mtime_ns") == current["mtime_ns"]:
        return True
    return recorded["sha256"] == sha256(Path(current["path"]))


def check_replaceable(dest: Path, spec: EmbeddedModel) -> None:
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir() or dest.is_symlink():
        raise ModelPrepError(
            f"{dest} exists and is not a directory: remove it or set INFERENCE_MODEL_DIR elsewhere."
        )
    other = _marker_model(read_marker(dest))
    if other is not None and other != spec.key:
        raise ModelPrepError(
            f"{dest} holds the embedded model {other}, not {spec.key} "
            "(INFERENCE_EMBEDDED_MODEL); it is left alone. Unset INFERENCE_MODEL_DIR (each "
            "embedded model has its own folder under var/models/) or point it elsewhere, or "
            f"remove the folder to have {spec.key} prepared there."
        )
    foreign = sorted(p.name for p in dest.iterdir() if p.name not in _OWN_NAMES)
    if foreign:
        raise ModelPrepError(
            f"{dest} has no valid {MARKER_NAME} and holds files this preparation did not make "
            f"({', '.join(foreign[:5])}); it is left alone. Remove the folder to have it "
            "prepared again, or set INFERENCE_MODEL_DIR elsewhere."
        )
