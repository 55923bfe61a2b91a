"""The choice between the compiled kernels and torch's ops: measured (here with injected timings),
kept on disk, and torch's ops wherever the compiled path is slower or missing."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from zooscope.networks.architectures import Architecture, initialise
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population import autotune, compiled_kernels
from zooscope.population import convolution as population_convolution
from zooscope.population.forward import convolution_paths, module_forward, population_forward
from zooscope.population.kernel_cache import CACHE_ENV, cache_folder

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
CNN_S = Architecture("cnn_s", 1, 28)
KERNELS = ("slab_max_product", "model_conv")


@pytest.fixture(scope="module")
def built_kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both kernels built once for this module's tests, each of which gets a copy of the folder."""
    folder = tmp_path_factory.mktemp("built-kernels")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        patch.setenv(compiled_kernels.ENABLE_ENV, "auto")
        for name in KERNELS:
            compiled_kernels.build(name)
        _fresh_state()
        for name in KERNELS:  # their builds made and timed, the decisions kept here
            assert compiled_kernels.kernel_variant(name) is not None
        _fresh_state()
    return folder


def _path_decisions() -> list[Path]:
    """The stored decisions about which convolutions run compiled (beside them: the first-layer
    kernels' builds, kernel_variant)."""
    files = Path(cache_folder()).glob("autotune-*.json")
    return [path for path in files if "architecture" in json.loads(path.read_text()).get("identity", {})]


def _fresh_state() -> None:
    compiled_kernels.forget_kernels()
    autotune.forget_decisions()


@pytest.fixture
def kernel_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_kernels: Path) -> Iterator[Path]:
    """A cache folder of this test's own, holding the built kernels and no decision; autotuning on."""
    folder = tmp_path / "kernels"
    shutil.copytree(built_kernels, folder)
    monkeypatch.setenv(CACHE_ENV, str(folder))
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "auto")
    _fresh_state()
    yield folder
    _fresh_state()


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cache folder with nothing built in it yet; autotuning on."""
    folder = tmp_path / "kernels"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "auto")
    _fresh_state()
    yield folder
    _fresh_state()


def _inject_timings(monkeypatch: pytest.MonkeyPatch, seconds: Callable[[str], float]) -> list[list[str]]:
    """The autotune's clock replaced: each candidate label 'takes' seconds(label). Returns the
    labels of every timing asked for."""
    asked: list[list[str]] = []

    def timed(runners):
        asked.append(list(runners))
        return {label: seconds(label) for label in runners}

    monkeypatch.setattr(autotune, "time_candidates", timed)
    return asked


def _refuse_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(runners):
        raise AssertionError("nothing should be timed here")

    monkeypatch.setattr(autotune, "time_candidates", refuse)


class _Counted:
    """A kernel whose calls are recorded by name; its other attributes are the kernel's."""

    def __init__(self, kernel: object, name: str, calls: list[str]) -> None:
        self._kernel, self._name, self._calls = kernel, name, calls

    def __call__(self, *args, **kwargs):
        self._calls.append(self._name)
        return self._kernel(*args, **kwargs)

    def __getattr__(self, attribute: str):
        return getattr(self._kernel, attribute)


def _count_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kernels the program looks up, wrapped to record each call by name."""
    calls: list[str] = []
    for name in ("slab_max_product_kernel", "model_conv_kernel"):
        found = getattr(compiled_kernels, name)

        def counted(found=found, name=name):
            kernel = found()
            return None if kernel is None else _Counted(kernel, name, calls)

        monkeypatch.setattr(population_convolution, name, counted)
    return calls


def _case(arch: Architecture = CNN_S, models: int = 3, n: int = 20):
    generator = torch.Generator().manual_seed(21)
    state_dicts = []
    for _ in range(models):
        module = arch.build()
        initialise(module, "kaiming_uniform", generator)
        state_dicts.append(module.state_dict())
    return (
        state_dicts,
        stack_state_dicts(arch, state_dicts),
        torch.randn(n, *arch.input_shape, generator=generator),
    )


def _assert_matches_modules(
    state_dicts, logits: torch.Tensor, x: torch.Tensor, arch: Architecture = CNN_S
) -> None:
    for i, state_dict in enumerate(state_dicts):
        torch.testing.assert_close(logits[i], module_forward(arch, state_dict, x), atol=1e-5, rtol=1e-5)


def _compiled_count(label: str) -> int:
    return label.count("C")


@needs_compiler
@pytest.mark.usefixtures("kernel_cache")
def test_the_forward_runs_torch_where_the_compiled_path_measured_slower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = _inject_timings(monkeypatch, lambda label: 1.0 + _compiled_count(label))  # each kernel slower
    calls = _count_kernel_calls(monkeypatch)
    state_dicts, params, x = _case()
    with torch.inference_mode():
        logits = population_forward(CNN_S, params, x)
    assert asked == [["TTT", "TCT", "CCT"]], "every way this call can run was timed, once"
    assert calls == [], "no compiled kernel runs where it measured slower"
    _assert_matches_modules(state_dicts, logits, x)
    choice = convolution_paths(CNN_S, 3, 20)
    assert (choice.compiled, choice.chosen, choice.origin) == (frozenset(), "TTT", "measured")
    assert choice.timings == {"TTT": 1.0, "TCT": 2.0, "CCT": 3.0}


@needs_compiler
@pytest.mark.usefixtures("kernel_cache")
def test_the_forward_runs_the_compiled_kernels_where_they_measured_faster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _inject_timings(monkeypatch, lambda label: 1.0 / (1 + _compiled_count(label)))
    calls = _count_kernel_calls(monkeypatch)
    state_dicts, params, x = _case()
    with torch.inference_mode():
        logits = population_forward(CNN_S, params, x)
    assert set(calls) == {"slab_max_product_kernel", "model_conv_kernel"}
    _assert_matches_modules(state_dicts, logits, x)
    assert convolution_paths(CNN_S, 3, 20).compiled == {"module_list.0", "module_list.3"}


@needs_compiler
@pytest.mark.usefixtures("kernel_cache")
@pytest.mark.parametrize("ratio, chosen", [(0.95, "TTT"), (0.85, "CCT")])
def test_a_compiled_path_must_beat_torch_by_the_margin(
    monkeypatch: pytest.MonkeyPatch, ratio: float, chosen: str
) -> None:
    _inject_timings(monkeypatch, lambda label: {"TTT": 1.0, "TCT": 1.0, "CCT": ratio}[label])
    assert convolution_paths(CNN_S, 3, 20).chosen == chosen
    assert autotune.pick({"TTT": 1.0, "CCT": autotune.MARGIN}, "TTT") == "CCT"
    assert autotune.pick({"TTT": 1.0, "CCT": autotune.MARGIN + 0.01}, "TTT") == "TTT"


@needs_compiler
@pytest.mark.usefixtures("kernel_cache")
def test_a_stored_decision_is_reused_by_a_later_process(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _inject_timings(monkeypatch, lambda label: 1.0 / (1 + _compiled_count(label)))
    first = convolution_paths(CNN_S, 100, 1000)
    assert first.origin == "measured" and len(asked) == 1
    assert convolution_paths(CNN_S, 100, 1000) is first, "this process remembers it"
    files = _path_decisions()
    assert len(files) == 1, "the decision sits beside the built kernels"
    stored = json.loads(files[0].read_text())
    assert stored["chosen"] == "CCT" and stored["identity"]["models"] == 64  # the shapes timed
    assert any(name.startswith("model_conv-") for name in stored["identity"]["kernels"])

    autotune.forget_decisions()  # as a new process would start
    again = convolution_paths(CNN_S, 100, 1000)
    assert (again.origin, again.chosen, again.compiled) == ("cached", "CCT", first.compiled)
    assert again.timings == first.timings and len(asked) == 1, "read, not timed again"
    assert convolution_paths(CNN_S, 120, 999).origin == "cached", "a call of nearly the same size shares it"

    convolution_paths(CNN_S, 8, 1000)  # other shapes: a decision of their own
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        convolution_paths(CNN_S, 100, 1000)  # another thread count
    finally:
        torch.set_num_threads(threads)
    assert len(asked) == 3 and len(_path_decisions()) == 3


@needs_compiler
@pytest.mark.usefixtures("kernel_cache")
def test_an_unreadable_decision_is_timed_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked = _inject_timings(monkeypatch, lambda label: 1.0)
    convolution_paths(CNN_S, 3, 20)
    (stored,) = _path_decisions()
    stored.write_text("{ not json")
    autotune.forget_decisions()
    with caplog.at_level(logging.WARNING, logger="zooscope.population.autotune"):
        assert convolution_paths(CNN_S, 3, 20).origin == "measured"
    assert len(asked) == 2 and "unreadable" in caplog.text
    assert json.loads(stored.read_text())["chosen"] == "TTT", "and written anew"


@pytest.mark.usefixtures("empty_cache")
def test_without_a_compiler_the_forward_runs_torch_and_times_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compiled_kernels.COMPILER_ENV, "/nonexistent/cc")
    _refuse_timing(monkeypatch)
    state_dicts, params, x = _case()
    with torch.inference_mode():
        logits = population_forward(CNN_S, params, x)
    _assert_matches_modules(state_dicts, logits, x)
    assert convolution_paths(CNN_S, 3, 20).origin == "torch"


@pytest.mark.usefixtures("empty_cache")
def test_a_failed_build_runs_torch_and_times_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'cc: internal compiler error' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv(compiled_kernels.COMPILER_ENV, str(broken))
    _refuse_timing(monkeypatch)
    state_dicts, params, x = _case()
    with torch.inference_mode():
        logits = population_forward(CNN_S, params, x)
    _assert_matches_modules(state_dicts, logits, x)
    choice = convolution_paths(CNN_S, 3, 20)
    assert (choice.origin, choice.compiled) == ("torch", frozenset())


@needs_compiler
@pytest.mark.usefixtures("kernel_cache")
def test_the_forced_modes_time_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_timing(monkeypatch)
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "1")
    forced = convolution_paths(CNN_S, 3, 20)
    assert (forced.origin, forced.compiled) == ("forced", {"module_list.0", "module_list.3"})
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "0")
    assert convolution_paths(CNN_S, 3, 20).origin == "torch"
    assert compiled_kernels.model_conv_kernel() is None


def _forget_variant_decisions() -> None:
    for path in Path(cache_folder()).glob("autotune-*.json"):
        if json.loads(path.read_text())["identity"].get("kernel", "").endswith(" build"):
            path.unlink()
    _fresh_state()


def _variant_labels(name: str) -> list[str]:
    return [compiled_kernels.variant_label(variant) for variant in compiled_kernels.BUILD_VARIANTS[name]]


@needs_compiler
@pytest.mark.usefixtures("kernel_cache")
@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("ratio, chosen", [(0.95, 0), (0.85, 1)])
def test_a_kernel_takes_another_build_only_where_it_measured_faster(
    monkeypatch: pytest.MonkeyPatch, name: str, ratio: float, chosen: int
) -> None:
    _forget_variant_decisions()
    labels = _variant_labels(name)
    asked = _inject_timings(monkeypatch, lambda label: ratio if label == labels[1] else 1.0)
    variant = compiled_kernels.BUILD_VARIANTS[name][chosen]
    assert compiled_kernels.kernel_variant(name) == variant
    assert labels in asked, "each build timed"
    # the forward's kernel, and the path decision's identity, are that build
    assert compiled_kernels.built_library(name) == compiled_kernels.build(name, defines=variant)
    state_dicts, params, x = _case()
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "1")
    with torch.inference_mode():
        _assert_matches_modules(state_dicts, population_forward(CNN_S, params, x), x)

    _fresh_state()  # a later process reads the decision
    _refuse_timing(monkeypatch)
    assert compiled_kernels.kernel_variant(name) == variant


@needs_compiler
@pytest.mark.usefixtures("kernel_cache")
def test_variants_that_do_not_build_leave_the_defaults_untimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forget_variant_decisions()
    for path in Path(cache_folder()).glob("*.so"):
        path.unlink()  # built afresh, by a compiler that fails on every shape but the defaults
    refused = {
        f"-D{key}={value}"
        for variants in compiled_kernels.BUILD_VARIANTS.values()
        for variant in variants[1:]
        for key, value in variant.items()
        if variants[0].get(key) != value
    }
    picky = tmp_path / "picky-cc"
    tests = " ".join(f'[ "$a" = "{flag}" ] && exit 1;' for flag in sorted(refused))
    picky.write_text(f'#!/bin/sh\nfor a in "$@"; do {tests} true; done\nexec cc "$@"\n')
    picky.chmod(0o755)
    monkeypatch.setenv(compiled_kernels.COMPILER_ENV, str(picky))
    _refuse_timing(monkeypatch)
    for name in KERNELS:
        assert compiled_kernels.kernel_variant(name) == compiled_kernels.BUILD_VARIANTS[name][0]
    assert compiled_kernels.slab_max_product_kernel() is not None
    assert compiled_kernels.model_conv_kernel() is not None


def test_time_candidates_takes_the_best_of_rounds_in_turn_and_drops_hopeless_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: clock[0])
    runs: list[str] = []

    def runner(label: str, costs: list[float]) -> Callable[[], None]:
        """Takes each of `costs` in turn (the first is the warm-up), then the last one forever."""

        def run() -> None:
            runs.append(label)
            clock[0] += costs.pop(0) if len(costs) > 1 else costs[0]

        return run

    best = autotune.time_candidates(
        {
            # held up in its first timed run: not dropped for it, and its best is an undisturbed run
            "stalled": runner("stalled", [0.5, 0.2, 0.002]),
            "steady": runner("steady", [0.004]),
            "hopeless": runner("hopeless", [0.1]),
        }
    )
    assert best == pytest.approx({"stalled": 0.002, "steady": 0.004, "hopeless": 0.1})
    assert runs[:3] == ["stalled", "steady", "hopeless"], "one warm-up run each, first"
    assert runs.count("hopeless") == 1 + autotune.ROUNDS, "dropped after the least rounds: it cannot win"
    # the cheap ones run on until each has run MIN_SECONDS: 0.05 s at 0.004 s a run
    assert runs.count("steady") == runs.count("stalled") == 1 + 13
