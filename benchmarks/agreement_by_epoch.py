"""Agreement by the epoch an original was saved at: reads the evaluation.json an ablation (or
`zooscope ae evaluate`) writes beside a trained autoencoder, and prints a markdown table.

    .venv/bin/python benchmarks/agreement_by_epoch.py RUN/csb/evaluation.json [RUN/other/evaluation.json ...]

A zoo checkpoint's id is `<model>@<epoch>` (zooscope/zoo/store.py); on a zoo that keeps early
epochs (`zooscope zoo build --checkpoint-epochs 1,2,4,8,24`) this says whether a reconstruction
keeps its original's training stage or comes back as a later one (docs/tuning.md, "A zoo with a
wide range of accuracies").
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def by_epoch(items: list[dict]) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = {}
    for item in items:
        _, _, epoch = item["checkpoint_id"].rpartition("@")
        groups.setdefault(int(epoch), []).append(item)
    return dict(sorted(groups.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluations", type=Path, nargs="+")
    args = parser.parse_args()
    columns = ("autoencoder", "epoch", "checkpoints", "original accuracy (%)", "reconstructed accuracy (%)")
    print("| " + " | ".join((*columns, "agreement (%)")) + " |")
    print("|---|---|---|---|---|---|")
    for path in args.evaluations:
        for epoch, items in by_epoch(json.loads(path.read_text())["items"]).items():
            means = [
                100 * statistics.mean(item[key] for item in items)
                for key in ("original_accuracy", "reconstructed_accuracy", "agreement")
            ]
            print(
                f"| {path.parent.name} | {epoch} | {len(items)} | "
                + " | ".join(f"{m:.1f}" for m in means)
                + " |"
            )


if __name__ == "__main__":
    main()
