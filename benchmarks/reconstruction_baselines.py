"""What simple codes of a test checkpoint keep of its function: baselines for the autoencoder's
reconstructions at a latent size (docs/tuning.md, "What bounds agreement on the digits zoo").

    .venv/bin/python benchmarks/reconstruction_baselines.py --zoo data/zoos/default

Each baseline puts a network in place of every test checkpoint, evaluated as an autoencoder's
reconstruction is (zooscope.analysis.evaluation: agreement with the original, accuracy, and by
band of the original's accuracy), beside its L2 distance to the original:
- PCA with k components: the test checkpoint projected on the top k principal directions of the
  training checkpoints' flat parameter vectors (centred on their shared mean: each checkpoint's
  code is its k coordinates). Among linear codes of k numbers PCA has the least L2 error on its
  own training set; "variance kept" says how much of the training and of the test checkpoints'
  spread about the mean it keeps. It knows nothing of permutation symmetry or of function;
- the nearest training checkpoint in L2: a code that only indexes the training set;
- another seed of the same recipe (init, learning rate, weight decay) at the same epoch, from the
  training split: what a code that knew the recipe and nothing of the seed would give (the mean
  over those replicates, and the one of them that agrees most).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

import torch


def main() -> None:
    from zooscope.analysis.evaluation import evaluate_reconstructions
    from zooscope.machine import cpu_summary
    from zooscope.networks.parameters import FlatLayout
    from zooscope.weightspace.tokens import TokenLayout
    from zooscope.zoo.store import Zoo

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo", required=True)
    parser.add_argument("--components", default="84,168,336,504,1042", help="comma-separated k")
    args = parser.parse_args()

    zoo = Zoo.open(args.zoo)
    arch = zoo.architecture
    layout = FlatLayout.of(arch)
    train = zoo.load_checkpoints(zoo.checkpoints(split="train"))
    test_records = zoo.checkpoints(split="test")
    test = zoo.load_checkpoints(test_records)
    x_train = layout.flatten(train.params).double()
    x_test = layout.flatten(test.params).double()
    mean = x_train.mean(0)
    # Right singular vectors of the centred training matrix: the principal directions, by variance.
    _, singular, directions = torch.linalg.svd(x_train - mean, full_matrices=False)
    explained = (singular**2).cumsum(0) / (singular**2).sum()
    data = zoo.dataset()
    tokens = TokenLayout.of(arch)
    parameters = layout.size
    print(
        f"zoo {args.zoo}: {arch.name}, {parameters:,} parameters, {x_train.shape[0]} training and "
        f"{x_test.shape[0]} test checkpoints; machine: {cpu_summary()}; torch {torch.__version__}"
    )
    print()
    print(
        "| code | k / parameters | variance kept, training / test | test L2 error, mean | mean agreement "
        "| agreement, originals >= 80 % | reconstructed accuracy, mean | agreement by band of original "
        "accuracy (0-0.2 / 0.2-0.5 / 0.5-0.8 / 0.8-1) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    _kept = _kept_of(x_test, mean)  # % of the test checkpoints' spread about the mean a code keeps

    def evaluate(originals: torch.Tensor, rebuilt: torch.Tensor, activations: Any) -> list[Any]:
        params = layout.unflatten(originals.float()), layout.unflatten(rebuilt.float())
        return evaluate_reconstructions(arch, *params, data, tokens, activations=activations).items

    for k in _ints(args.components):
        rebuilt = _pca_rebuild(x_test, mean, directions, k)
        kept = f"{100 * float(explained[min(k, explained.numel()) - 1]):.2f} % / {_kept(rebuilt):.1f} %"
        items = evaluate(x_test, rebuilt, test.activations)
        _row(f"PCA, k = {k}", f"{k / parameters:.2f}x", kept, items, (rebuilt - x_test).norm(dim=1).mean())
    # The nearest training checkpoint (L2) in place of each test one: what a code that only
    # indexes the training set could give at best in weight space.
    nearest = x_train[torch.cdist(x_test, x_train).argmin(dim=1)]
    items = evaluate(x_test, nearest, test.activations)
    _row(
        "nearest training checkpoint",
        "-",
        f"- / {_kept(nearest):.1f} %",
        items,
        (nearest - x_test).norm(dim=1).mean(),
    )
    # Another seed of the same recipe (init, lr, weight decay) at the same epoch, from the training
    # split: what a code that knew the recipe and nothing of the seed would rebuild.
    recipe_of = [
        (r.properties["init"], r.properties["lr"], r.properties["wd"], r.epoch) for r in train.records
    ]
    pairs = [
        (i, j)
        for i, r in enumerate(test.records)
        for j, key in enumerate(recipe_of)
        if key == (r.properties["init"], r.properties["lr"], r.properties["wd"], r.epoch)
    ]
    index_test = torch.tensor([i for i, _ in pairs])
    index_train = torch.tensor([j for _, j in pairs])
    acts = None if test.activations is None else test.activations[index_test]
    items = evaluate(x_test[index_test], x_train[index_train], acts)
    per_test: dict[int, list[Any]] = {}
    for (i, _), item in zip(pairs, items, strict=True):
        per_test.setdefault(i, []).append(item)
    distance = (x_test[index_test] - x_train[index_train]).norm(dim=1).mean()
    for name, pick in (("mean over them", _mean_item), ("the one that agrees most", _most_agreeing)):
        chosen = [pick(group) for group in per_test.values()]
        _row(
            f"another seed, same recipe and epoch ({len(pairs) / len(per_test):.1f} a checkpoint): {name}",
            "-",
            "-",
            chosen,
            distance,
        )


def _kept_of(x: torch.Tensor, mean: torch.Tensor) -> Any:
    spread = (x - mean).pow(2).sum()
    return lambda rebuilt: 100 * (1 - float((rebuilt - x).pow(2).sum() / spread))


def _mean_item(group: list[Any]) -> Any:
    return SimpleNamespace(
        **{
            f: sum(getattr(i, f) for i in group) / len(group) for f in ("agreement", "reconstructed_accuracy")
        },
        original_accuracy=group[0].original_accuracy,
    )


def _most_agreeing(group: list[Any]) -> Any:
    return max(group, key=lambda item: item.agreement)


def _row(name: str, ratio: str, kept: str, items: list[Any], error: Any) -> None:
    from zooscope.analysis.evaluation import agreement_by_band

    high = [item.agreement for item in items if item.original_accuracy >= 0.8]
    bands = " / ".join(
        "-" if band["agreement"] is None else f"{100 * band['agreement']:.1f} % (n {band['count']})"
        for band in agreement_by_band(items)
    )
    print(
        f"| {name} | {ratio} | {kept} | {float(error):.2f} | "
        f"{100 * sum(i.agreement for i in items) / len(items):.1f} % | "
        f"{100 * sum(high) / max(len(high), 1):.1f} % | "
        f"{100 * sum(i.reconstructed_accuracy for i in items) / len(items):.1f} % | {bands} |"
    )


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def _pca_rebuild(x: torch.Tensor, mean: torch.Tensor, directions: torch.Tensor, k: int) -> torch.Tensor:
    basis = directions[: min(k, directions.shape[0])]
    return mean + ((x - mean) @ basis.T) @ basis


if __name__ == "__main__":
    main()
