"""GPU benchmarks in one short run, written as a markdown table and JSON (docs/benchmarks.md, "GPU").

    PYTHONPATH=. python3 benchmarks/gpu_benchmarks.py --out /tmp/gpu-benchmarks     # a CUDA machine
    .venv/bin/python benchmarks/gpu_benchmarks.py --smoke --out /tmp/gpu-smoke       # a CPU, seconds

Imports only the standard library, torch and zooscope (a GPU machine may lack the web stack).
Sections, each printed when it is done and written to <out>/gpu_benchmarks.md and
<out>/gpu_benchmarks.json at once, so a run cut short keeps what it finished; a section that fails
is recorded with its error and the next one runs; once --budget-s has passed, the remaining
sections are recorded as skipped:

1. the device: card name, memory, torch and CUDA versions;
2. population forward of 128 models on the device against a loop of nn.Module forwards
   (cnn_digits, CNN-s, CNN3; 32 and 1000 inputs);
3. zoo training on the device: small grids of cnn_digits, CNN-s and CNN3, models/s;
4. the paper autoencoder preset (AutoencoderConfig.paper, TrainingConfig.paper: C+S+B, batch 64,
   256 queries) on a paper-sized CNN3 zoo (tokens 93 x 289; synthetic weights and images, which
   time the same as real ones), seconds a training epoch with mixed precision on and off;
5. mixed precision on and off for the cpu preset on a digits zoo built here: seconds an epoch and
   the validation fidelity each reaches (structural error, agreement with the originals);
6. reconstruction throughput, checkpoints/s: the autoencoder alone, and a reconstruct job's work
   (reconstruct_and_evaluate: reconstruct, then run originals and reconstructions on test inputs).

--smoke runs every section at tiny sizes (the tiny autoencoder preset in place of the paper's) on
whatever device there is: the test suite runs it on a CPU so the script keeps working.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from zooscope.analysis.evaluation import reconstruct_and_evaluate
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import train_on_checkpoints
from zooscope.machine import cpu_summary
from zooscope.networks.architectures import Architecture, initialise
from zooscope.networks.datasets import ImageDataset, ImageSplit, load_dataset
from zooscope.networks.parameters import StackedParams, stack_state_dicts
from zooscope.population.forward import population_forward
from zooscope.version import code_version
from zooscope.weightspace.tokens import TokenLayout
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.training import train_models

DIGITS = Architecture("cnn_digits", 1, 8)
CNN_S = Architecture("cnn_s", 1, 28)
CNN3 = Architecture("cnn3", 3, 32)  # the paper's architecture
RESULTS = "gpu_benchmarks"


@dataclass(frozen=True)
class Sizes:
    forward_models: int
    forward_inputs: tuple[int, ...]
    forward_repeats: int
    zoo_seeds: int  # seeds per cell of the 4 x 5 x 3 grid (1: 60 models); 0: 4 models (tiny grid)
    zoo_epochs: int
    train_images: int | None  # images of each data set's train split the zoos train on (None: all)
    paper_checkpoints: int  # the paper zoo: 1,200 models x 4 kept epochs, 70 % of them train
    paper_epochs: int
    paper_autoencoder: str  # the autoencoder preset the paper section trains
    paper_batch: int | None  # None: the paper recipe's 64
    paper_queries: int | None  # None: the paper recipe's 256
    fidelity_seeds: int
    fidelity_zoo_epochs: int
    fidelity_epochs: int
    fidelity_autoencoder: str
    reconstruct_checkpoints: int


FULL = Sizes(
    forward_models=128,
    forward_inputs=(32, 1000),
    forward_repeats=5,
    zoo_seeds=1,
    zoo_epochs=3,
    train_images=None,
    paper_checkpoints=3360,
    paper_epochs=2,
    paper_autoencoder="paper",
    paper_batch=None,
    paper_queries=None,
    fidelity_seeds=2,
    fidelity_zoo_epochs=10,
    fidelity_epochs=30,
    fidelity_autoencoder="cpu",
    reconstruct_checkpoints=1000,
)
SMOKE = Sizes(
    forward_models=3,
    forward_inputs=(16, 20),
    forward_repeats=1,
    zoo_seeds=0,
    zoo_epochs=1,
    train_images=32,
    paper_checkpoints=6,
    paper_epochs=1,
    paper_autoencoder="tiny",
    paper_batch=3,
    paper_queries=4,
    fidelity_seeds=0,
    fidelity_zoo_epochs=1,
    fidelity_epochs=1,
    fidelity_autoencoder="tiny",
    reconstruct_checkpoints=4,
)


@dataclass
class Section:
    title: str
    header: tuple[str, ...]
    rows: list[list[str]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # what the JSON keeps beyond the rows


@dataclass
class Checkpoints:
    """What the autoencoder trains on: an architecture and stacked parameters."""

    arch: Architecture
    params: StackedParams


class Run:
    """The run's results so far, written out after every section."""

    def __init__(self, out: Path, device: torch.device, sizes: Sizes, budget_s: float) -> None:
        self.out, self.device, self.sizes, self.budget_s = out, device, sizes, budget_s
        self.started = time.perf_counter()
        self.sections: dict[str, dict[str, Any]] = {}
        self.kept: dict[str, Any] = {}  # what a later section reuses (trained autoencoders)
        out.mkdir(parents=True, exist_ok=True)

    def section(self, name: str, make: Callable[[Run], Section]) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed > self.budget_s:
            self.sections[name] = {"status": "skipped", "why": f"time budget of {self.budget_s:.0f} s spent"}
            print(f"\n## {name}: skipped (time budget of {self.budget_s:.0f} s spent)", flush=True)
            self.write()
            return
        begun = time.perf_counter()
        try:
            result = make(self)
        except Exception as error:  # recorded, and the next section runs
            self.sections[name] = {
                "status": "error",
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(limit=8),
                "seconds": round(time.perf_counter() - begun, 1),
            }
            print(f"\n## {name}: FAILED: {type(error).__name__}: {error}", flush=True)
            self.write()
            return
        self.sections[name] = {
            "status": "ok",
            "title": result.title,
            "header": list(result.header),
            "rows": result.rows,
            "data": result.data,
            "seconds": round(time.perf_counter() - begun, 1),
        }
        print("\n" + _markdown_section(name, self.sections[name]), flush=True)
        self.write()

    def write(self) -> None:
        record = {"machine": machine(self.device), "sizes": self.sizes.__dict__, "sections": self.sections}
        record["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        (self.out / f"{RESULTS}.json").write_text(json.dumps(record, indent=1, default=str))
        lines = [
            f"# GPU benchmarks ({'smoke' if self.sizes is SMOKE else 'full'} sizes)",
            "",
            _machine_line(self.device),
        ]
        lines += ["", f"elapsed {record['elapsed_s']} s", ""]
        lines += [_markdown_section(name, section) for name, section in self.sections.items()]
        (self.out / f"{RESULTS}.md").write_text("\n".join(lines) + "\n")


def _markdown_section(name: str, section: dict[str, Any]) -> str:
    if section["status"] != "ok":
        return f"## {name}\n\n{section['status']}: {section.get('error') or section.get('why')}\n"
    lines = [f"## {section['title']}", "", f"({section['seconds']} s)", ""]
    lines.append("| " + " | ".join(section["header"]) + " |")
    lines.append("|" + "---|" * len(section["header"]))
    lines += ["| " + " | ".join(row) + " |" for row in section["rows"]]
    return "\n".join(lines) + "\n"


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "zooscope": code_version(),
        "cpu": cpu_summary(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            card=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
        )
    return info


def _machine_line(device: torch.device) -> str:
    info = machine(device)
    card = (
        f"{info['card']} ({info['memory_gib']} GiB, CUDA {info['cuda']})" if "card" in info else str(device)
    )
    return f"{card}; torch {info['torch']}, zooscope {info['zooscope']}, python {info['python']}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - started


def _best_in_turn(
    first: Callable[[], object], second: Callable[[], object], device: torch.device, repeats: int
) -> tuple[float, float]:
    """Best times of two functions run in turn after a warm-up of each."""
    first(), second()
    a, b = [], []
    for _ in range(repeats):
        a.append(_timed(first, device))
        b.append(_timed(second, device))
    return min(a), min(b)


# ---- 1. the device --------------------------------------------------------------------------------
def device_section(run: Run) -> Section:
    info = machine(run.device)
    section = Section("Device", ("what", "value"), data=info)
    section.rows = [[key, str(value)] for key, value in info.items()]
    return section


# ---- 2. population forward ------------------------------------------------------------------------
def forward_section(run: Run) -> Section:
    device, sizes = run.device, run.sizes
    section = Section(
        f"Population forward of {sizes.forward_models} models vs a loop of nn.Modules "
        f"(best of {sizes.forward_repeats}, in turn)",
        ("architecture", "inputs", "population", "one at a time", "speed-up"),
    )
    for arch in (DIGITS, CNN_S, CNN3):
        generator = torch.Generator().manual_seed(0)
        modules = []
        for _ in range(sizes.forward_models):
            module = arch.build()
            initialise(module, "kaiming_uniform", generator)
            modules.append(module.eval().to(device))
        params = {
            k: v.to(device) for k, v in stack_state_dicts(arch, [m.state_dict() for m in modules]).items()
        }
        for n in sizes.forward_inputs:
            x = torch.randn(n, *arch.input_shape, generator=generator).to(device)

            def population(x=x, params=params, arch=arch) -> None:
                with torch.inference_mode():
                    population_forward(arch, params, x)

            def loop(x=x, modules=modules) -> None:
                with torch.inference_mode():
                    for module in modules:
                        module(x)

            t_pop, t_loop = _best_in_turn(population, loop, device, sizes.forward_repeats)
            section.rows.append(
                [
                    arch.name,
                    str(n),
                    f"{t_pop * 1e3:.1f} ms",
                    f"{t_loop * 1e3:.1f} ms",
                    f"{t_loop / t_pop:.2f}x",
                ]
            )
            section.data[f"{arch.name} {n}"] = {"population_s": t_pop, "loop_s": t_loop}
    return section


# ---- 3. zoo training -------------------------------------------------------------------------------
def synthetic_dataset(shape: tuple[int, int, int], n_train: int, n_test: int, seed: int = 0) -> ImageDataset:
    """Random images with random labels: trains (and times) like a data set of that shape."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> ImageSplit:
        return ImageSplit(
            torch.randn(n, *shape, generator=generator), torch.randint(0, 10, (n,), generator=generator)
        )

    channels = shape[0]
    return ImageDataset(
        name=f"synthetic-{'x'.join(map(str, shape))}",
        train=split(n_train),
        val=split(max(1, n_test // 2)),
        test=split(n_test),
        n_classes=10,
        input_shape=shape,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
    )


def _fewer(dataset: ImageDataset, n: int | None) -> ImageDataset:
    if n is None:
        return dataset
    return replace(
        dataset,
        train=ImageSplit(dataset.train.x[:n], dataset.train.y[:n]),
        val=ImageSplit(dataset.val.x[:n], dataset.val.y[:n]),
        test=ImageSplit(dataset.test.x[:n], dataset.test.y[:n]),
    )


def _grid(arch: Architecture, seeds: int, epochs: int, kept: tuple[int, ...] | None = None) -> ZooConfig:
    """The default digits grid (4 inits x 5 lrs x 3 wds x seeds), or ZooConfig.tiny's 2 x 2 x 1 with
    one seed (seeds 0)."""
    kept = kept or (epochs,)
    if seeds == 0:
        return ZooConfig.tiny(architecture=arch, n_seeds=1, epochs=epochs, checkpoint_epochs=kept)
    return ZooConfig.default_digits(architecture=arch, n_seeds=seeds, epochs=epochs, checkpoint_epochs=kept)


def zoo_training_section(run: Run) -> Section:
    device, sizes = run.device, run.sizes
    section = Section(
        f"Zoo training on {device}, {sizes.zoo_epochs} epochs (evaluation of every epoch included)",
        ("zoo", "data set", "models", "wall", "models/s", "model-epochs/s"),
    )
    cases = (
        (DIGITS, load_dataset("digits")),
        (CNN_S, load_dataset("digits", resize=28)),
        (CNN3, synthetic_dataset(CNN3.input_shape, 5000, 1000)),
    )
    for arch, dataset in cases:
        config = _grid(arch, sizes.zoo_seeds, sizes.zoo_epochs)
        dataset = _fewer(dataset, sizes.train_images)
        trained = train_models(config, dataset, device=device)
        _sync(device)
        wall = trained.wall_seconds
        section.rows.append(
            [
                arch.name,
                f"{dataset.name} ({len(dataset.train)} train)",
                str(trained.n_models),
                f"{wall:.1f} s",
                f"{trained.n_models / wall:.2f}",
                f"{trained.n_models * config.epochs / wall:.1f}",
            ]
        )
        section.data[arch.name] = {"models": trained.n_models, "epochs": config.epochs, "wall_s": wall}
    return section


# ---- 4. the paper autoencoder on a paper-sized zoo ---------------------------------------------------
def synthetic_checkpoints(arch: Architecture, n: int, seed: int = 0) -> StackedParams:
    """n random checkpoints of `arch` at an initialisation's scale (1 / sqrt(fan in))."""
    generator = torch.Generator().manual_seed(seed)
    reference = stack_state_dicts(arch, [arch.build().state_dict()])
    params = {}
    for key, value in reference.items():
        shape = value.shape[1:]
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        params[key] = torch.randn(n, *shape, generator=generator) / math.sqrt(fan_in)
    return params


def _train(
    run: Run,
    train: Checkpoints,
    val: Checkpoints | None,
    dataset: ImageDataset,
    ae_config: AutoencoderConfig,
    tc: TrainingConfig,
) -> tuple[Any, list[dict[str, Any]], float]:
    """The trained autoencoder, its epoch log and the peak device memory (GiB)."""
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    with tempfile.TemporaryDirectory() as folder:
        ae = train_on_checkpoints(train, val, dataset, ae_config, tc, folder)
    peak = torch.cuda.max_memory_allocated(run.device) / 2**30 if run.device.type == "cuda" else 0.0
    return ae, ae.training_log, peak


def _epoch_seconds(log: list[dict[str, Any]]) -> float:
    """Seconds of a training epoch: the mean after the first (which pays for warm-up), if any."""
    seconds = [entry["seconds"] for entry in log]
    later = seconds[1:] or seconds
    return sum(later) / len(later)


def paper_autoencoder_section(run: Run) -> Section:
    device, sizes = run.device, run.sizes
    layout = TokenLayout.of(CNN3)
    ae_config = AutoencoderConfig.preset(sizes.paper_autoencoder)
    base = TrainingConfig.paper()
    tc = replace(
        base,
        epochs=sizes.paper_epochs,
        device=str(device),
        batch_size=sizes.paper_batch or base.batch_size,
        n_queries=sizes.paper_queries or base.n_queries,
        checkpoint_every=0,
    )
    train = Checkpoints(CNN3, synthetic_checkpoints(CNN3, sizes.paper_checkpoints))
    dataset = synthetic_dataset(
        CNN3.input_shape, 2000 if sizes is FULL else 32, 1000 if sizes is FULL else 16
    )
    section = Section(
        f"The {sizes.paper_autoencoder} autoencoder preset on {sizes.paper_checkpoints} CNN3 checkpoints "
        f"(tokens {layout.n_tokens} x {layout.width}), recipe TrainingConfig.paper (C+S+B, batch "
        f"{tc.batch_size}, {tc.n_queries} queries), {tc.epochs} epochs",
        ("mixed precision", "parameters", "seconds an epoch", "seconds a step", "peak memory", "final loss"),
    )
    for amp in (True, False):
        ae, log, peak = _train(run, train, None, dataset, ae_config, replace(tc, amp=amp))
        if amp:
            run.kept["paper"] = (ae, dataset)
        section.rows.append(
            [
                _amp_label(amp, device),
                f"{ae.model.n_parameters:,}",
                f"{_epoch_seconds(log):.2f}",
                f"{log[-1]['seconds_per_step']:.4f}",
                f"{peak:.1f} GiB",
                f"{log[-1]['loss']:.4f}",
            ]
        )
        section.data["amp" if amp else "fp32"] = {"log": log, "peak_gib": peak}
    return section


def _amp_label(amp: bool, device: torch.device) -> str:
    if device.type != "cuda":
        return ("on" if amp else "off") + " (CPU: mixed precision is CUDA only)"
    if not amp:
        return "off (float32)"
    return f"on ({'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'} autocast)"


# ---- 5. mixed precision and fidelity -------------------------------------------------------------------
def _digits_zoo(run: Run) -> tuple[Checkpoints, Checkpoints, ImageDataset]:
    """A digits zoo built on the device, two kept epochs, split by model (every fifth to val)."""
    sizes = run.sizes
    dataset = _fewer(load_dataset("digits"), sizes.train_images)
    epochs = sizes.fidelity_zoo_epochs
    kept = (epochs // 2, epochs) if epochs >= 2 else (epochs,)
    trained = train_models(_grid(DIGITS, sizes.fidelity_seeds, epochs, kept), dataset, device=run.device)
    healthy = ~trained.diverged
    model_index = torch.arange(trained.n_models)
    val_models = (model_index % 5 == 0) & healthy
    train_models_ = (model_index % 5 != 0) & healthy

    def gather(chosen: torch.Tensor) -> Checkpoints:
        index = chosen.nonzero().squeeze(1)
        params = {
            key: torch.cat([trained.checkpoints[e][key].cpu()[index] for e in kept])
            for key in trained.checkpoints[kept[0]]
        }
        return Checkpoints(DIGITS, params)

    return gather(train_models_), gather(val_models), dataset


def fidelity_section(run: Run) -> Section:
    device, sizes = run.device, run.sizes
    train, val, dataset = _digits_zoo(run)
    n_train, n_val = next(iter(train.params.values())).shape[0], next(iter(val.params.values())).shape[0]
    ae_config = AutoencoderConfig.preset(sizes.fidelity_autoencoder)
    tc = replace(
        TrainingConfig.preset(sizes.fidelity_autoencoder),
        epochs=sizes.fidelity_epochs,
        device=str(device),
        validate_every=sizes.fidelity_epochs,
        checkpoint_every=0,
    )
    section = Section(
        f"Mixed precision on and off: the {sizes.fidelity_autoencoder} preset on a digits zoo built here "
        f"({n_train} train, {n_val} val checkpoints), {tc.epochs} epochs, same seed",
        ("mixed precision", "seconds an epoch", "val structural", "val agreement", "val reconstructed acc."),
    )
    finals = {}
    for amp in (True, False):
        ae, log, _ = _train(run, train, val, dataset, ae_config, replace(tc, amp=amp))
        if amp:
            run.kept["digits"] = (ae, dataset, train, val)
        final = log[-1]
        finals[amp] = final
        section.rows.append(
            [
                _amp_label(amp, device),
                f"{_epoch_seconds(log):.2f}",
                f"{final['val_structural']:.4f}",
                f"{final['val_agreement']:.1%}",
                f"{final['val_reconstructed_accuracy']:.1%}",
            ]
        )
        section.data["amp" if amp else "fp32"] = {"log": log}
    difference = finals[True]["val_agreement"] - finals[False]["val_agreement"]
    section.rows.append(
        [
            "on - off",
            "",
            f"{finals[True]['val_structural'] - finals[False]['val_structural']:+.4f}",
            f"{difference:+.1%}",
            "",
        ]
    )
    return section


# ---- 6. reconstruction throughput ------------------------------------------------------------------------
def _state_dicts(params: StackedParams, n: int) -> list[dict[str, torch.Tensor]]:
    k = next(iter(params.values())).shape[0]
    return [{key: value[i % k].clone() for key, value in params.items()} for i in range(n)]


def reconstruct_section(run: Run) -> Section:
    device, sizes = run.device, run.sizes
    n = sizes.reconstruct_checkpoints
    section = Section(
        f"Reconstruction of {n} checkpoints on {device}: the autoencoder alone, and a reconstruct job's "
        "work (reconstruct_and_evaluate: reconstruct, run both on the test split)",
        ("autoencoder", "checkpoints", "autoencoder alone", "reconstruct and evaluate", "test inputs"),
    )
    cases = []
    if "digits" in run.kept:
        ae, dataset, train, _ = run.kept["digits"]
        cases.append(("digits, " + sizes.fidelity_autoencoder + " preset", ae, dataset, train.params))
    if "paper" in run.kept:
        ae, dataset = run.kept["paper"]
        cases.append(
            (
                "CNN3, " + sizes.paper_autoencoder + " preset",
                ae,
                dataset,
                synthetic_checkpoints(CNN3, n, seed=1),
            )
        )
    if not cases:
        raise RuntimeError("no trained autoencoder: sections 4 and 5 both failed")
    for name, ae, dataset, params in cases:
        state_dicts = _state_dicts(params, n)
        stacked = stack_state_dicts(ae.architecture, state_dicts)
        ae.reconstruct_params(take_first(stacked, min(n, 8)))  # warm-up
        alone = _timed(lambda ae=ae, stacked=stacked: ae.reconstruct_params(stacked), device)
        reconstruct_and_evaluate(ae, state_dicts[: min(n, 8)], dataset)  # warm-up
        job = _timed(lambda ae=ae, sds=state_dicts, ds=dataset: reconstruct_and_evaluate(ae, sds, ds), device)
        section.rows.append(
            [
                name,
                str(n),
                f"{n / alone:.0f} /s ({alone:.2f} s)",
                f"{n / job:.0f} /s ({job:.2f} s)",
                str(len(dataset.test)),
            ]
        )
        section.data[name] = {"checkpoints": n, "autoencoder_s": alone, "reconstruct_and_evaluate_s": job}
    return section


def take_first(params: StackedParams, n: int) -> StackedParams:
    return {key: value[:n] for key, value in params.items()}


SECTIONS: dict[str, Callable[[Run], Section]] = {
    "device": device_section,
    "forward": forward_section,
    "zoo_training": zoo_training_section,
    "paper_autoencoder": paper_autoencoder_section,
    "amp_fidelity": fidelity_section,
    "reconstruct": reconstruct_section,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_benchmarks.md and .json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device: seconds")
    parser.add_argument(
        "--device", default=None, help="default: cuda when there is one, else (with --smoke) cpu"
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="start no section after this many seconds (default 420)"
    )
    parser.add_argument("--only", choices=tuple(SECTIONS), action="append", help="run these sections only")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.smoke:
        print("no CUDA device: run with --smoke on a CPU (or --device cpu for full sizes)", file=sys.stderr)
        if args.device is None:
            return 2
    run = Run(args.out, device, SMOKE if args.smoke else FULL, args.budget_s)
    print(_machine_line(device), flush=True)
    for name, make in SECTIONS.items():
        if args.only is None or name in args.only:
            run.section(name, make)
    run.write()
    failed = [name for name, section in run.sections.items() if section["status"] == "error"]
    written = f"{args.out / (RESULTS + '.md')}, {args.out / (RESULTS + '.json')}"
    print(f"\nwritten: {written}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
