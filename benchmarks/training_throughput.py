"""Autoencoder training throughput: seconds an epoch, structure-only and C+S+B side by side
(docs/benchmarks.md, "Autoencoder training throughput").

    .venv/bin/python benchmarks/training_throughput.py --zoo DIR --epochs 3    # a built default zoo
    .venv/bin/python benchmarks/training_throughput.py --epochs 3              # builds it first (~2 min)
    .venv/bin/python benchmarks/training_throughput.py --zoo-preset tiny --epochs 1   # smoke, seconds
    .venv/bin/python benchmarks/training_throughput.py --zoo DIR --preset compress_cnn_s   # a CNN-s zoo

A preset's autoencoder (--preset, default cpu: AutoencoderConfig.cpu) on the zoo's train split,
the recipes of its TrainingConfig: structure-only (beta 1, the ablation's `structure`), C+S+B
(the preset's beta, the ablation's `csb`) and, where the preset adds the layer-statistics term
(cpu does), the preset itself, each with the
structure-first warm-up skipped so that every C+S+B step carries the behavioural term. Each epoch
is one training run of one epoch, the recipes in turn, so that drifts in the machine's speed reach
all of them alike; no validation. Prints the median and best epoch over --epochs rounds (the first
round, which pays for first-call costs, left out when there are more) and the cost of a behavioural
step against a structure-only one.

Set OMP_WAIT_POLICY (PASSIVE or ACTIVE) or the thread count in the environment to compare them:
both act when torch starts, so each needs its own process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from zooscope.autoencoder.config import AUTOENCODER_PRESETS, AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.training import train_on_checkpoints
from zooscope.machine import cpu_summary
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.store import Zoo, build_zoo


def recipes(preset: str = "cpu", queries: int | None = None) -> dict[str, TrainingConfig]:
    """structure-only and C+S+B of a preset's recipe, and the preset itself where it adds the
    layer-statistics term; `queries` replaces the preset's number of behavioural queries."""
    base = replace(TrainingConfig.preset(preset), device="cpu", beta_warmup_epochs=0, checkpoint_every=0)
    if queries is not None:
        base = base.with_overrides(queries=queries)
    runs = {
        "structure-only": base.with_overrides(beta=1.0, statistics_weight=0.0),
        "C+S+B": base.with_overrides(statistics_weight=0.0),
    }
    if base.statistics_weight > 0:
        runs[f"{preset} preset (C+S+B + T)"] = base
    return runs


def machine_line() -> str:
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return (
        f"machine: {cpu_summary()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY {policy}"
    )


def open_zoo(args: argparse.Namespace, scratch: Path) -> Zoo:
    if args.zoo:
        return Zoo.open(args.zoo)
    config = ZooConfig.preset(args.zoo_preset)
    print(f"building the {args.zoo_preset} zoo ({config.n_models} models) in {scratch}", flush=True)
    return build_zoo(config, scratch / "zoo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", help="an existing zoo folder (default: build --zoo-preset)")
    parser.add_argument(
        "--zoo-preset", default="digits", help="the zoo to build without --zoo (tiny: a smoke run)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="rounds of one epoch of each recipe")
    parser.add_argument(
        "--preset",
        default="cpu",
        choices=AUTOENCODER_PRESETS,
        help="the autoencoder and training preset whose recipes are timed (compress_cnn_s on a CNN-s zoo)",
    )
    parser.add_argument("--queries", type=int, help="behavioural queries a step (default: the preset's)")
    args = parser.parse_args()
    print(machine_line())
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        zoo = open_zoo(args, scratch)
        train = zoo.load_checkpoints(zoo.checkpoints(split="train"))
        dataset = zoo.dataset()
        seconds: dict[str, list[float]] = {name: [] for name in recipes(args.preset, args.queries)}
        steps: dict[str, int] = {}
        for round_ in range(args.epochs):
            for name, tc in recipes(args.preset, args.queries).items():
                ae = train_on_checkpoints(
                    train,
                    None,
                    dataset,
                    AutoencoderConfig.preset(args.preset),
                    replace(tc, epochs=1, seed=round_),
                    scratch / "ae",
                )
                entry = ae.training_log[-1]
                seconds[name].append(entry["seconds"])
                steps[name] = entry["step"]
                print(f"round {round_ + 1}: {name} {entry['seconds']:.2f} s", flush=True)
    timed = recipes(args.preset, args.queries)["C+S+B"]
    print(
        f"\n{len(train)} train checkpoints of {train.arch.name}, the {args.preset} preset, "
        f"batch {timed.batch_size}, {timed.n_queries} queries\n"
    )
    print("| recipe | seconds an epoch (median) | best | seconds a step | step cost vs structure-only |")
    print("|---|---|---|---|---|")
    kept = {name: values[1:] or values for name, values in seconds.items()}
    baseline = statistics.median(kept["structure-only"])
    for name, values in kept.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.2f} | {min(values):.2f} | {median / steps[name]:.4f} | "
            f"{median / baseline:.2f}x |"
        )
    print(f"\nload average (1 min) at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
