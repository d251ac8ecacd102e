"""The engine's settings reach vLLM: the slots, the step size, the CPU binding and KV space
(vLLM itself is replaced by a recorder here; every worker start in the other tests loads the
real engine with these same arguments)."""

import os

import pytest
from django.conf import settings

from inference_worker.engines import build_engine


@pytest.fixture
def engine_args(monkeypatch):
    from vllm.v1.engine.async_llm import AsyncLLM

    seen = []
    monkeypatch.setattr(AsyncLLM, "from_engine_args", classmethod(lambda cls, a: seen.append(a)))
    for name in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_the_settings_become_vllms_arguments_and_environment(engine_args):
    build_engine(
        {
            **settings.INFERENCE,
            "BACKEND": "local",
            "MAX_CONCURRENCY": 24,
            "MAX_BATCHED_TOKENS": 512,
            "CPU_THREADS_BIND": "0-1",
            "CPU_KVCACHE_SPACE_GIB": 3,
            "BLOCK_SIZE": 32,
        }
    )
    (args,) = engine_args
    assert (args.max_num_seqs, args.max_num_batched_tokens, args.block_size) == (24, 512, 32)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_no_step_size_keeps_vllms_default_and_auto_binding_is_the_default(engine_args):
    build_engine(
        {**settings.INFERENCE, "BACKEND": "local", "MAX_BATCHED_TOKENS": 0, "BLOCK_SIZE": 0}
    )
    (args,) = engine_args
    assert args.max_num_batched_tokens is None and args.block_size is None
    assert args.max_num_seqs == settings.INFERENCE["MAX_CONCURRENCY"]
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == settings.INFERENCE["CPU_THREADS_BIND"]
