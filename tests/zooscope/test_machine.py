"""The CPU description every benchmark prints: model and vector flags from /proc/cpuinfo."""

from __future__ import annotations

import pytest

from zooscope import machine


@pytest.fixture
def cpuinfo(monkeypatch):
    def use(lines: tuple[str, ...]) -> None:
        monkeypatch.setattr(machine, "cpuinfo_lines", lambda: lines)

    return use


def test_the_summary_names_the_model_and_the_vector_flags_in_a_fixed_order(cpuinfo) -> None:
    cpuinfo(("flags\t\t: fpu sse2 avx512_bf16 avx2 avx512f fma", "model name\t: AMD EPYC"))
    assert machine.cpu_model() == "AMD EPYC"
    assert machine.cpu_flags() >= {"avx2", "avx512f", "fma"}
    summary = machine.cpu_summary()
    assert summary.startswith("AMD EPYC, ") and summary.endswith("flags avx2 avx512f avx512_bf16")


def test_without_cpuinfo_the_model_comes_from_platform_and_no_flags(cpuinfo) -> None:
    cpuinfo(())
    assert machine.cpu_model()  # platform's machine name at least
    assert machine.cpu_flags() == frozenset()
    assert "flags none of avx2/avx512f/avx512_bf16/amx_tile" in machine.cpu_summary()
