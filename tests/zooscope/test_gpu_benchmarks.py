"""benchmarks/gpu_benchmarks.py at its smoke sizes on the CPU: it runs blind, once, on a GPU
machine, so every section must keep working here."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from tests.benchmark_scripts import BENCHMARKS, benchmark_module
from zooscope.population import compiled_kernels

SCRIPT = BENCHMARKS / "gpu_benchmarks.py"


@pytest.fixture(scope="module")
def gpu_benchmarks():
    with benchmark_module("gpu_benchmarks") as module:
        yield module


def test_it_imports_only_the_standard_library_torch_and_zooscope() -> None:
    tree = ast.parse(SCRIPT.read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if not (isinstance(node, ast.ImportFrom) and node.level)
    }
    assert imported - set(sys.stdlib_module_names) <= {"torch", "zooscope"}


def test_every_section_runs_at_smoke_sizes_and_is_written(
    gpu_benchmarks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "0")  # no autotune timing on the CPU here
    assert gpu_benchmarks.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "gpu_benchmarks.json").read_text())
    assert list(record["sections"]) == list(gpu_benchmarks.SECTIONS)
    for name, section in record["sections"].items():
        assert section["status"] == "ok", (name, section.get("traceback"))
        assert section["rows"], name
    markdown = (tmp_path / "gpu_benchmarks.md").read_text()
    assert "tokens 93 x 289" in markdown and "## Device" in markdown
    assert record["sections"]["reconstruct"]["data"], "both trained autoencoders reconstructed"


def test_a_failing_section_is_recorded_and_the_budget_skips_the_rest(
    gpu_benchmarks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(run):
        raise RuntimeError("out of cheese")

    monkeypatch.setitem(gpu_benchmarks.SECTIONS, "forward", broken)
    argv = ["--smoke", "--device", "cpu", "--out", str(tmp_path), "--only", "device", "--only", "forward"]
    assert gpu_benchmarks.main(argv) == 1
    sections = json.loads((tmp_path / "gpu_benchmarks.json").read_text())["sections"]
    assert sections["device"]["status"] == "ok"
    assert sections["forward"]["status"] == "error" and "out of cheese" in sections["forward"]["error"]

    assert gpu_benchmarks.main([*argv[:5], "--budget-s", "0"]) == 0
    sections = json.loads((tmp_path / "gpu_benchmarks.json").read_text())["sections"]
    assert {section["status"] for section in sections.values()} == {"skipped"}
    assert "skipped" in (tmp_path / "gpu_benchmarks.md").read_text()
