"""Where a zoo's structural loss goes: each group of training checkpoints' share of the energy of
the standardised tokens (what a decoder that outputs the zoo's mean is charged, so what the
structural term spends its gradient on at the start), beside the group's accuracy. Groups are the
values of one recorded hyperparameter (docs/tuning.md, "The CNN-s zoo on real MNIST at a
compressing latent").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structural_energy.py --zoo ZOO \
        [--by init] [--normalisation tensor]
"""

from __future__ import annotations

import argparse
from collections import defaultdict


def main() -> None:
    from zooscope.autoencoder.normalisation import TokenNormaliser
    from zooscope.weightspace.tokens import TokenLayout
    from zooscope.zoo.store import Zoo

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo", required=True)
    parser.add_argument("--by", default="init", help="a recorded hyperparameter (init, lr, wd, epoch)")
    parser.add_argument("--normalisation", default="tensor", help="TrainingConfig.token_normalisation")
    args = parser.parse_args()

    zoo = Zoo.open(args.zoo)
    records = zoo.checkpoints(split="train")
    checkpoints = zoo.load_checkpoints(records)
    layout = TokenLayout.of(checkpoints.arch)
    tokens = layout.tokenize(checkpoints.params)
    standardised = TokenNormaliser.fit(layout, tokens, kind=args.normalisation).normalise(tokens)
    energy = (standardised.pow(2) * layout.mask).sum(dim=(1, 2))  # [K]
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record, value in zip(records, energy.tolist(), strict=True):
        groups[str(record.properties.get(args.by))].append((value, record.properties["test_acc"]))
    total = energy.sum().item()
    print(f"{len(records)} training checkpoints of {args.zoo}, tokens standardised per {args.normalisation}")
    print()
    columns = "share of the structural energy | energy per checkpoint | test accuracy, mean"
    print(f"| {args.by} | checkpoints | {columns} |")
    print("|---|---|---|---|---|")
    for name, rows in sorted(groups.items(), key=lambda item: -sum(v for v, _ in item[1])):
        share = sum(v for v, _ in rows) / total
        per_checkpoint = sum(v for v, _ in rows) / len(rows)
        accuracy = sum(a for _, a in rows) / len(rows)
        print(f"| {name} | {len(rows)} | {share:.1%} | {per_checkpoint:.0f} | {accuracy:.1%} |")


if __name__ == "__main__":
    main()
