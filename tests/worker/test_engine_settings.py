"""The engine's settings reach vLLM: the slots, the step size, the CPU binding and KV space
(vLLM itself is replaced by a recorder here; every worker start in the other tests loads the
real engine with these same arguments)."""

import os

import pytest
from django.conf import settings

from inference_worker import engines
from inference_worker.engine_priority import CPU_ENGINE_NICE
from inference_worker.engines import (
    CPU_STEP_TOKENS,
    build_engine,
    cpu_environment,
    max_batched_tokens,
    reserved_cores,
)

niced: list[int] = []  # the niceness each engine built here was given


@pytest.fixture
def engine_args(monkeypatch):
    niced.clear()
    from vllm.v1.engine.async_llm import AsyncLLM

    seen = []
    monkeypatch.setattr(AsyncLLM, "from_engine_args", classmethod(lambda cls, a: seen.append(a)))
    # No process of this test run is niced (the stacks of tests/e2e are its children too).
    monkeypatch.setattr(
        engines, "nice_engine_processes", lambda niceness: niced.append(niceness) or 0
    )
    for name in (
        "VLLM_CPU_OMP_THREADS_BIND",
        "VLLM_CPU_KVCACHE_SPACE",
        "VLLM_CPU_NUM_OF_RESERVED_CPU",
    ):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_the_settings_become_vllms_arguments_and_environment(engine_args):
    build_engine(
        {
            **settings.INFERENCE,
            "BACKEND": "local",
            "CPU_THREADS_BIND": "0-1",
            "CPU_RESERVED_CORES": "1",
            "CPU_KVCACHE_SPACE_GIB": 3,
            "BLOCK_SIZE": 32,
            "MAX_CONCURRENCY": 12,
            "MAX_BATCHED_TOKENS": 1024,
            "ENGINE_NICE": "0",
        }
    )
    (args,) = engine_args
    assert niced == []
    assert (args.max_num_seqs, args.max_num_batched_tokens, args.block_size) == (12, 1024, 32)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"


def test_the_defaults_on_this_cpu_host_take_every_core_in_256_token_steps(engine_args):
    build_engine(
        {**settings.INFERENCE, "BACKEND": "local", "MAX_BATCHED_TOKENS": 0, "BLOCK_SIZE": 0}
    )
    (args,) = engine_args
    assert args.max_num_batched_tokens == CPU_STEP_TOKENS == 256
    assert args.block_size is None
    assert args.max_num_seqs == settings.INFERENCE["MAX_CONCURRENCY"] == 24
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    # This machine has 2 cores: none is kept free of the compute threads.
    assert len(os.sched_getaffinity(0)) <= 4
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    # And the compute, on every core, yields to the desk's processes.
    assert niced == [CPU_ENGINE_NICE] == [10]


def test_a_gpu_keeps_vllms_own_step_size_unless_one_is_set():
    assert max_batched_tokens({"MAX_BATCHED_TOKENS": 0}, on_cpu=False) is None
    assert max_batched_tokens({"MAX_BATCHED_TOKENS": 0}, on_cpu=True) == CPU_STEP_TOKENS
    assert max_batched_tokens({"MAX_BATCHED_TOKENS": 2048}, on_cpu=True) == 2048


@pytest.mark.parametrize(
    ("setting", "cores", "reserved"),
    [("auto", 2, 0), ("auto", 4, 0), ("auto", 5, None), ("auto", 64, None), ("1", 2, 1)],
)
def test_auto_keeps_no_core_free_on_a_small_host_and_vllms_one_on_a_big_one(
    setting, cores, reserved
):
    assert reserved_cores(setting, cores) == reserved
    environment = cpu_environment(
        {"CPU_KVCACHE_SPACE_GIB": 2, "CPU_RESERVED_CORES": setting}, cores=cores
    )
    assert environment.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == (
        None if reserved is None else str(reserved)
    )


@pytest.mark.parametrize("setting", ["-1", "two", ""])
def test_a_wrong_reserved_cores_setting_says_what_it_takes(setting):
    with pytest.raises(ValueError, match='INFERENCE_CPU_RESERVED_CORES is "auto" or'):
        reserved_cores(setting, 2)
