"""Model-zoo benchmarks, printed as a markdown table (docs/benchmarks.md, "Model zoos").

    .venv/bin/python benchmarks/zoo_benchmarks.py [--skip-build] [--device cpu] [--only forward]
    .venv/bin/python benchmarks/zoo_benchmarks.py --only inductor    # torch.compile beside our kernels

1. population forward of 128 models vs a loop of nn.Module forwards (same weights, same inputs),
   for cnn_digits, CNN-s and CNN3 (the paper's architecture), with the path each convolution took
   (C: a compiled kernel, T: torch's ops; population.forward.convolution_paths) and the
   autotune's timings of one input chunk behind that choice;
2. zoo training throughput in model-epochs per second, population vs one model at a time;
3. wall time of building the default digits zoo, with its accuracy spread;
4. the roofline of (1): how many floating-point operations the forward is, how fast this machine
   multiplies matrices, and so the largest speed-up over the loop that any implementation could
   reach at the same arithmetic;
5. (only with --only inductor) the population forward against torch's own ways to the same result:
   torch's ops in our program (ZOOSCOPE_COMPILED_KERNELS=0: oneDNN's convolutions) and
   torch.compile (inductor's C++ backend) of the reference vmap over the nn.Module, whole-graph.
Timings are the best of a few repeats (the forward rows: 7, population and loop in turn); the
load average is printed because a shared machine makes every number noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.func import functional_call, vmap

from zooscope.machine import cpu_summary
from zooscope.networks.architectures import Architecture, initialise
from zooscope.networks.datasets import load_dataset
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population import compiled_kernels
from zooscope.population import forward as population
from zooscope.population.forward import convolution_kernels, convolution_paths, population_forward
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import build_zoo
from zooscope.zoo.training import train_models, train_one_at_a_time

FORWARD_MODELS = 128
FORWARD_INPUTS = (1000, 32)
FORWARD_ARCHITECTURES = (
    Architecture("cnn_s", 1, 28),
    Architecture("cnn_digits", 1, 8),
    Architecture("cnn3", 3, 32),
)
REPEATS = 3
FORWARD_REPEATS = 7
# CNN3's loop of 128 modules at 1000 inputs takes seconds: fewer repeats of its rows
SLOW_FORWARD_REPEATS = 3
CHUNK_SWEEP = range(20, 26)  # exponents of CHUNK_FLOATS
PROFILE_TOP = 10


def best_of_interleaved(
    first: Callable[[], object], second: Callable[[], object], repeats: int = FORWARD_REPEATS
) -> tuple[float, float]:
    """Best times of two functions run in turn, so that drifts in the machine's speed (a shared VM
    slows down and speeds up over seconds) reach both sides alike."""
    first(), second()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, record in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            fn()
            record.append(time.perf_counter() - started)
    return min(times[0]), min(times[1])


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    fn()  # warm-up: first calls pay for allocation and dispatch caches
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _forward_population(
    arch: Architecture, generator: torch.Generator, device: torch.device
) -> tuple[list[torch.nn.Module], dict[str, torch.Tensor]]:
    """FORWARD_MODELS freshly initialised modules and the same weights stacked, on `device`."""
    modules = []
    for _ in range(FORWARD_MODELS):
        module = arch.build()
        initialise(module, "kaiming_uniform", generator)
        modules.append(module.eval().to(device))
    stacked = stack_state_dicts(arch, [m.state_dict() for m in modules])
    return modules, {key: value.to(device) for key, value in stacked.items()}


def _forward_case(
    arch: Architecture, n: int, device: torch.device
) -> tuple[list[torch.nn.Module], dict[str, torch.Tensor], torch.Tensor]:
    """The seeded population of _forward_population and n inputs drawn after it."""
    generator = torch.Generator().manual_seed(0)
    modules, params = _forward_population(arch, generator, device)
    return modules, params, torch.randn(n, *arch.input_shape, generator=generator).to(device)


FORWARD_HEADER = ("measurement", "population", "one at a time", "speed-up", "convolutions (autotune)")


def forward_rows(device: torch.device) -> list[list[str]]:
    rows = []
    for arch in FORWARD_ARCHITECTURES:
        generator = torch.Generator().manual_seed(0)
        modules, params = _forward_population(arch, generator, device)
        repeats = SLOW_FORWARD_REPEATS if arch.family == "cnn3" else FORWARD_REPEATS
        for n in FORWARD_INPUTS:
            x = torch.randn(n, *arch.input_shape, generator=generator).to(device)

            t_pop, t_loop = best_of_interleaved(
                lambda a=arch, p=params, x=x: _population_forward(a, p, x, device),
                lambda m=modules, x=x: _loop_forward(m, x, device),
                repeats,
            )
            rows.append(
                [
                    f"forward {FORWARD_MODELS} x {arch.name}, {n} inputs",
                    f"{t_pop * 1e3:.0f} ms",
                    f"{t_loop * 1e3:.0f} ms",
                    f"{t_loop / t_pop:.2f}x",
                    _paths_taken(arch, n, device),
                ]
            )
    return rows


def _paths_taken(arch: Architecture, n: int, device: torch.device) -> str:
    """The path of each convolution in the population side's calls, and the timings behind it."""
    if device.type != "cpu":
        return "torch (the compiled kernels are CPU-only)"
    choice = convolution_paths(arch, FORWARD_MODELS, n)
    if choice.origin not in ("measured", "cached"):
        reason = {
            "forced": "ZOOSCOPE_COMPILED_KERNELS=1",
            "torch": "ZOOSCOPE_COMPILED_KERNELS=0 or none built",
        }
        return f"{choice.chosen} ({reason[choice.origin]})"
    timings = ", ".join(
        f"{label} {seconds * 1e3:.2f}"
        for label, seconds in sorted(choice.timings.items(), key=lambda item: item[1])
    )
    chunk = f"{choice.inputs} inputs x {choice.models} models"
    return f"**{choice.chosen}** ({choice.origin}; ms a chunk of {chunk}: {timings})"


def training_rows(device: torch.device) -> list[list[str]]:
    dataset = load_dataset("digits")
    config = ZooConfig.default_digits(n_seeds=1, epochs=2, checkpoint_epochs=(2,))  # 60 models
    together = train_models(config, dataset, device=device)
    together_rate = together.n_models * config.epochs / together.wall_seconds
    # one at a time is slow: time a slice of the grid with every init, rate per model-epoch
    specs = config.model_specs()[:: max(1, config.n_models // 8)]
    alone = train_one_at_a_time(config, dataset, specs=specs)
    alone_rate = len(specs) * config.epochs / alone.wall_seconds
    return [
        [
            f"zoo training, cnn_digits, batch {config.batch_size} (model-epochs/s, incl. evaluation)",
            f"{together_rate:.1f} /s ({together.n_models} models)",
            f"{alone_rate:.1f} /s ({len(specs)} models)",
            f"{together_rate / alone_rate:.2f}x",
        ]
    ]


def build_rows(device: str) -> tuple[list[list[str]], str]:
    config = ZooConfig.default_digits()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        zoo = build_zoo(config, Path(tmp) / "zoo", device=device)
        wall = time.perf_counter() - started
        last = max(config.checkpoint_epochs)
        accs = [r.properties["test_acc"] for r in zoo.checkpoints(epochs=[last])]
        diverged = sum(m.diverged for m in zoo.models)
    spread = (
        f"test accuracy at epoch {last} over {len(accs)} models: mean {statistics.mean(accs):.3f}, "
        f"median {statistics.median(accs):.3f}, max {max(accs):.3f}, min {min(accs):.3f}; {diverged} diverged"
    )
    row = [
        f"build default digits zoo ({config.n_models} models, {config.epochs} epochs, write included)",
        f"{wall:.0f} s",
        "-",
        "target <= 300 s",
    ]
    return [row], spread


def roofline_rows(device: torch.device) -> list[list[str]]:
    """The arithmetic bound of each forward row: its FLOPs at this machine's GEMM peak, the rate
    each side reaches, and the speed-up over the loop that the peak would give."""
    from torch.utils.flop_counter import FlopCounterMode

    a, b = torch.randn(4096, 4096, device=device), torch.randn(4096, 4096, device=device)
    peak = 2 * 4096**3 / best_of(lambda: (a @ b, _sync(device)))
    rows = [
        [
            "matrix multiply 4096 x 4096 x 4096 (the machine's float32 peak)",
            f"{peak / 1e9:.0f} GFLOP/s",
            "",
            "",
        ]
    ]
    for arch in FORWARD_ARCHITECTURES:
        for n in FORWARD_INPUTS:
            modules, params, x = _forward_case(arch, n, device)
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                modules[0](x)
            flops = counter.get_total_flops() * FORWARD_MODELS
            t_pop = best_of(lambda a=arch, p=params, x=x: _population_forward(a, p, x, device))
            t_loop = best_of(lambda m=modules, x=x: _loop_forward(m, x, device))
            rows.append(
                [
                    f"{arch.name}, {FORWARD_MODELS} models x {n} inputs: {flops / 1e9:.1f} GFLOP",
                    f"{flops / t_pop / 1e9:.1f} GFLOP/s ({flops / t_pop / peak:.0%} of peak)",
                    f"{flops / t_loop / 1e9:.1f} GFLOP/s",
                    f"ceiling {t_loop / (flops / peak):.1f}x at peak",
                ]
            )
    return rows


def chunk_rows(device: torch.device) -> list[list[str]]:
    """The input-chunk size of the population program (population.CHUNK_FLOATS), swept: small
    chunks keep activations in cache but pay each step's fixed cost more often."""
    rows = []
    for arch in FORWARD_ARCHITECTURES:
        _, params, x = _forward_case(arch, FORWARD_INPUTS[0], device)
        for exponent in CHUNK_SWEEP:
            with _chunk_floats(2**exponent):
                seconds = best_of(lambda a=arch, p=params, x=x: _population_forward(a, p, x, device))
            rows.append(
                [
                    f"forward {FORWARD_MODELS} x {arch.name}, {FORWARD_INPUTS[0]} inputs, "
                    f"CHUNK_FLOATS = 2**{exponent}",
                    f"{seconds * 1e3:.0f} ms",
                    "",
                    "",
                ]
            )
    return rows


def profile_rows(device: torch.device) -> list[list[str]]:
    """Where the population forward's time goes: torch's profiler over 3 forwards at 1000 inputs,
    the operators with the most self time, per forward."""
    rows = []
    for arch in FORWARD_ARCHITECTURES:
        _, params, x = _forward_case(arch, FORWARD_INPUTS[0], device)
        _population_forward(arch, params, x, device)  # warm-up: plans, chunk memory
        with torch.profiler.profile(record_shapes=True) as profiler:
            for _ in range(3):
                _population_forward(arch, params, x, device)
        events = profiler.key_averages(group_by_input_shape=True)
        total = sum(event.self_cpu_time_total for event in events)
        for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:PROFILE_TOP]:
            shapes = ", ".join(str(list(shape)) for shape in event.input_shapes if shape)
            rows.append(
                [
                    f"{arch.name}: {event.key} {shapes}",
                    f"{event.self_cpu_time_total / 3 / 1e3:.1f} ms a forward",
                    f"{event.count // 3} calls",
                    f"{event.self_cpu_time_total / total:.0%}",
                ]
            )
    return rows


INDUCTOR_HEADER = (
    "forward, 128 models",
    "population (autotuned)",
    "torch's ops (ZOOSCOPE_COMPILED_KERNELS=0)",
    "torch.compile of the vmap reference",
    "its compile time",
    "loop of nn.Modules",
)


def inductor_rows(device: torch.device) -> list[list[str]]:
    """Would torch.compile give the speed with less code of our own? Inductor compiles the vmap
    reference (population_forward_vmap's computation) as one graph; our program with torch's ops
    is the other path without our kernels. Each time is the best of a few calls after one."""
    rows = []
    for arch in FORWARD_ARCHITECTURES:
        generator = torch.Generator().manual_seed(0)
        modules, params = _forward_population(arch, generator, device)
        template = arch.build().eval().to(device)

        def reference(p: dict, x: torch.Tensor, template: torch.nn.Module = template) -> torch.Tensor:
            return vmap(lambda q, one: functional_call(template, q, (one,)), in_dims=(0, None))(p, x)

        repeats = SLOW_FORWARD_REPEATS if arch.family == "cnn3" else REPEATS
        for n in FORWARD_INPUTS:
            x = torch.randn(n, *arch.input_shape, generator=generator).to(device)
            compiled = torch.compile(reference, fullgraph=True, dynamic=False)
            started = time.perf_counter()
            with torch.inference_mode():
                out = compiled(params, x)
            _sync(device)
            compile_s = time.perf_counter() - started
            with torch.inference_mode():
                expected = population_forward(arch, params, x)
            if not torch.allclose(out, expected, rtol=1e-4, atol=1e-5):
                raise AssertionError(f"torch.compile's forward of {arch.name} differs from the population's")
            ours = _best_ms(lambda a=arch, p=params, x=x: population_forward(a, p, x), repeats, device)
            with _kernel_mode("0"):
                torch_ops = _best_ms(
                    lambda a=arch, p=params, x=x: population_forward(a, p, x), repeats, device
                )
            inductor = _best_ms(lambda c=compiled, p=params, x=x: c(p, x), repeats, device)
            loop = _best_ms(lambda m=modules, x=x: [module(x) for module in m], repeats, device)
            rows.append([f"{arch.name}, {n} inputs", ours, torch_ops, inductor, f"{compile_s:.0f} s", loop])
    return rows


def _best_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> str:
    def run() -> None:
        with torch.inference_mode():
            fn()
        _sync(device)

    return f"{best_of(run, repeats) * 1e3:.0f} ms"


@contextmanager
def _kernel_mode(value: str) -> Iterator[None]:
    saved = os.environ.get(compiled_kernels.ENABLE_ENV)
    os.environ[compiled_kernels.ENABLE_ENV] = value  # read on every call (compiled_kernels.kernel_mode)
    try:
        yield
    finally:
        if saved is None:
            del os.environ[compiled_kernels.ENABLE_ENV]
        else:
            os.environ[compiled_kernels.ENABLE_ENV] = saved


@contextmanager
def _chunk_floats(value: int) -> Iterator[None]:
    saved = population.CHUNK_FLOATS
    population.CHUNK_FLOATS = value
    try:
        yield
    finally:
        population.CHUNK_FLOATS = saved


def _population_forward(arch: Architecture, params: dict, x: torch.Tensor, device: torch.device) -> None:
    with torch.inference_mode():
        population_forward(arch, params, x)
    _sync(device)


def _loop_forward(modules: list[torch.nn.Module], x: torch.Tensor, device: torch.device) -> None:
    with torch.inference_mode():
        for module in modules:
            module(x)
    _sync(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _print_row(cells: list[str] | tuple[str, ...]) -> None:
    print("| " + " | ".join(cells) + " |", flush=True)


def layer_kernels(arch: Architecture, n: int, device: torch.device) -> str:
    """The kernel and path of each convolution in a forward row's population calls
    (population.forward.convolution_kernels)."""
    _, params, x = _forward_case(arch, n, device)
    kernels = convolution_kernels(arch, params, x)
    return "; ".join(f"conv{i} {kernel}" for i, kernel in enumerate(kernels.values(), start=1))


def kernel_builds() -> str:
    """Each compiled kernel's build that runs here (compiled_kernels.kernel_variant), or "none"."""
    if compiled_kernels.kernel_mode() == "torch":
        return "none (ZOOSCOPE_COMPILED_KERNELS=0)"
    chosen = []
    for name in compiled_kernels.BUILD_VARIANTS:
        variant = compiled_kernels.kernel_variant(name)
        chosen.append(f"{name} {'not built' if variant is None else compiled_kernels.variant_label(variant)}")
    return "; ".join(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true", help="skip the (minutes long) default zoo build")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--only",
        choices=("forward", "roofline", "training", "build", "chunks", "profile", "inductor"),
        help="run one section only (e.g. the population-forward rows while tuning population.py); "
        "chunks (the CHUNK_FLOATS sweep), profile (where the forward's time goes) and inductor "
        "(torch.compile beside our kernels) run only when asked for",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"machine: {cpu_summary()}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
    )
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f}\n")
    if args.only in (None, "forward"):
        print(
            "Convolutions: one letter each in forward order, C a compiled kernel, T torch's ops "
            "(ZOOSCOPE_COMPILED_KERNELS: 0 torch, 1 compiled, unset the autotune's choice).\n"
        )
        _print_row(FORWARD_HEADER)
        _print_row(["---"] * len(FORWARD_HEADER))
        for row in forward_rows(device):
            _print_row(row)
        print(f"\nCompiled kernels' builds on this machine: {kernel_builds()}\n")
        if device.type == "cpu":
            print("What each convolution ran on, in forward order:")
            for arch in FORWARD_ARCHITECTURES:
                for n in FORWARD_INPUTS:
                    print(f"- {arch.name}, {n} inputs: {layer_kernels(arch, n, device)}")
            print()
    if args.only == "inductor":
        _print_row(INDUCTOR_HEADER)
        _print_row(["---"] * len(INDUCTOR_HEADER))
        for row in inductor_rows(device):
            _print_row(row)
    sections = {"roofline": roofline_rows, "training": training_rows}
    if args.only in ("chunks", "profile"):
        sections = {"chunks": chunk_rows, "profile": profile_rows}
    spread = ""
    wanted = [name for name in sections if args.only in (None, name)]
    if wanted or (not args.skip_build and args.only in (None, "build")):
        _print_row(["measurement", "population", "one at a time", "speed-up"])
        _print_row(["---"] * 4)
    for name in wanted:
        for row in sections[name](device):
            _print_row(row)
    if not args.skip_build and args.only in (None, "build"):
        rows, spread = build_rows(args.device)
        for row in rows:
            _print_row(row)
    print(f"\nload average (1 min) at end: {os.getloadavg()[0]:.1f}")
    if spread:
        print(spread)


if __name__ == "__main__":
    main()
