"""Builds one zoo preset and prints what it cost and what it holds, as markdown tables
(docs/benchmarks.md, "Zoo presets").

    .venv/bin/python benchmarks/zoo_build.py --preset mnist5k-cnn-s [--out DIR]

Prints the machine (CPU model and vector flags: a figure from one CPU does not hold on another),
the wall time of the build (training, evaluation and writing) with its user and system CPU
time and minor page faults (the cost of memory mapped afresh: zooscope/heap.py), then test
accuracy by kept epoch and by init at the last epoch.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from zooscope.machine import cpu_summary
from zooscope.zoo.grid import ZooConfig
from zooscope.zoo.presets import ZOO_PRESETS
from zooscope.zoo.store import build_zoo


def accuracy_table(title: str, groups: dict[str, dict]) -> list[str]:
    lines = [f"| {title} | models | mean | median | max | min |", "|---|---|---|---|---|---|"]
    for name, s in groups.items():
        cells = [name, str(s["count"])] + [f"{s[k]:.1%}" for k in ("mean", "median", "max", "min")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mnist5k-cnn-s", choices=ZOO_PRESETS)
    parser.add_argument("--out", type=Path, default=None, help="keep the zoo here (default: a temp folder)")
    args = parser.parse_args()
    config = ZooConfig.preset(args.preset)
    print(f"machine: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.1f}\n")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "zoo"
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        zoo = build_zoo(config, out)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        summary = zoo.summary()
    print(
        "| preset | architecture | data set | models | epochs | checkpoints | build wall time "
        "| user / system CPU | minor page faults |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.preset} | {summary['architecture']} | {summary['dataset']} | {summary['n_models']} "
        f"| {config.epochs} | {summary['n_checkpoints']} | {wall:.0f} s ({wall / 60:.1f} min) "
        f"| {after.ru_utime - before.ru_utime:.0f} s / {after.ru_stime - before.ru_stime:.0f} s "
        f"| {(after.ru_minflt - before.ru_minflt) / 1e6:.1f} M |\n"
    )
    by_epoch = {f"epoch {e}": s for e, s in summary["test_acc_by_epoch"].items()}
    print("\n".join(accuracy_table("test accuracy, all models", by_epoch)) + "\n")
    by_init = summary["test_acc_by_hyperparameter"]["init"]
    print("\n".join(accuracy_table(f"test accuracy at epoch {summary['last_epoch']}, by init", by_init)))
    print(f"\ndiverged models: {summary['n_diverged']}; splits by model: {summary['models_per_split']}")
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
