"""The dtype the engine loads the model in, by the machine: bf16 only where the CPU computes
it natively (emulated bf16 made the default model 5-10 times slower)."""

import pytest

from inference_worker.engines import cpu_flags, resolved_dtype


def cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n")
    return str(path)


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [
        ("fpu sse2 avx2 fma", "float32"),
        ("fpu avx2 avx512f avx512bw avx512_vnni", "float32"),  # AVX-512 without its BF16 part
        ("fpu avx2 avx512f avx512_bf16 avx512_vnni", "bfloat16"),
        ("fpu avx2 amx_bf16 amx_tile", "bfloat16"),
    ],
)
def test_on_a_cpu_bf16_is_chosen_only_where_the_cpu_computes_it(tmp_path, flags, dtype):
    assert resolved_dtype("", cpuinfo(tmp_path, flags)) == dtype


def test_a_dtype_set_by_the_operator_wins(tmp_path):
    assert resolved_dtype("bfloat16", cpuinfo(tmp_path, "avx2")) == "bfloat16"
    assert resolved_dtype("auto", cpuinfo(tmp_path, "avx2")) == "auto"


def test_unreadable_cpu_flags_mean_none(tmp_path):
    assert cpu_flags(str(tmp_path / "missing")) == set()
    assert resolved_dtype("", str(tmp_path / "missing")) == "float32"
