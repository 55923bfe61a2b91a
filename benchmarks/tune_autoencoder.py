"""One shortened C+S+B training run on a zoo, evaluated on its test split (docs/tuning.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_autoencoder.py --zoo /tmp/abl-data/zoos/default \
        --out /tmp/tune/runs/NAME --epochs 15 --set token_normalisation=layer --set beta_warmup_epochs=5

`--set key=value` overrides a TrainingConfig field of the cpu preset, `--ae key=value` an
AutoencoderConfig field. Prints one JSON line with the settings and the test-split numbers the
autoencoder's targets are about (zooscope/experiments/targets.py), and appends it to --record when
given.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch


def _parse(cls: type, pairs: list[str]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        if key not in types:
            raise SystemExit(f"{cls.__name__} has no field {key!r}")
        try:  # numbers, booleans, null and lists as JSON; anything else ("none", "layer") as text
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def main() -> None:
    from zooscope.analysis.evaluation import evaluate_autoencoder
    from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
    from zooscope.autoencoder.training import train_autoencoder
    from zooscope.zoo.store import Zoo

    parser = argparse.ArgumentParser()
    parser.add_argument("--zoo", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--set", action="append", default=[], help="TrainingConfig field=value")
    parser.add_argument("--ae", action="append", default=[], help="AutoencoderConfig field=value")
    parser.add_argument("--record", default=None, help="JSON-lines file to append the result to")
    args = parser.parse_args()

    zoo = Zoo.open(args.zoo)
    ae_config = replace(AutoencoderConfig.cpu(), **_parse(AutoencoderConfig, args.ae))
    tc = replace(TrainingConfig.cpu(), epochs=args.epochs, device="cpu", **_parse(TrainingConfig, args.set))
    started = time.perf_counter()
    ae = train_autoencoder(zoo, ae_config, tc, args.out, log=print)
    seconds = time.perf_counter() - started
    report = evaluate_autoencoder(ae, zoo, "test")
    # Every checkpoint's numbers beside the artefact, for analyses after the run.
    (Path(args.out) / "test_report.json").write_text(json.dumps(report.to_dict(), indent=1))
    agg = report.aggregate
    high = agg["agreement_high_accuracy"]
    result = {
        "out": args.out,
        "epochs": args.epochs,
        "training": args.set,
        "autoencoder": args.ae,
        "threads": torch.get_num_threads(),
        "latent_ratio": round(
            math.prod(ae_config.latent_shape(ae.token_layout.n_tokens)) / ae.token_layout.arch.n_parameters, 3
        ),
        "train_seconds": round(seconds, 1),
        "agreement": round(100 * agg["agreement"]["mean"], 1),
        "agreement_high": round(100 * high["mean"], 1),
        "agreement_high_n": high["count"],
        "original_accuracy_mean": round(100 * agg["original_accuracy"]["mean"], 1),
        "reconstructed_accuracy_mean": round(100 * agg["reconstructed_accuracy"]["mean"], 1),
        "best_gap": round(100 * (agg["reconstructed_accuracy"]["max"] - agg["original_accuracy"]["max"]), 1),
        "structural_l2_real": round(agg["structural_distance_real"]["mean"], 2),
        "behavioural_distance": round(agg["behavioural_distance"]["mean"], 3),
        # agreement by band of original accuracy: "from-to": [count, agreement %]
        "agreement_by_band": {
            f"{band['from']:g}-{band['to'] if band['to'] is not None else 1:g}": [
                band["count"],
                None if band["agreement"] is None else round(100 * band["agreement"], 1),
            ]
            for band in agg["agreement_by_original_accuracy"]
        },
    }
    line = json.dumps(result)
    print(line)
    if args.record:
        with Path(args.record).open("a") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()
