"""How well can anything predict a zoo's test accuracy with the property probe? Ceilings, no autoencoder.

    .venv/bin/python benchmarks/probe_ceilings.py ZOO_DIR

The target is R^2 >= 0.9 for test accuracy from a ridge probe on the mean-pooled embedding. This
script measures, on the same train/val/test split and with the same probe (zooscope/analysis/probing.py;
an RBF kernel ridge probe beside it), what simpler representations of the same checkpoints reach:

- the hyperparameters themselves (init, lr, weight decay; with and without the epoch), and the
  "oracle" that predicts each test checkpoint by the mean accuracy of the training checkpoints
  with the same hyperparameters (the best any predictor can do that knows only the config);
- the weight-statistics baseline and per-layer moments of the weights (means of w, |w|, w^2,
  |w|^3 over each layer: the kind of feature a mean over tokens of per-token codes can hold),
  each with and without their logarithms (a nonlinearity after pooling), of the weights and
  the biases apart too;
- the first principal components of the weight statistics and their logs: an unsupervised
  summary, of an embedding's size, of the right numbers.

Prints a markdown table (docs/tuning.md, "What bounds R^2 on this zoo").
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from probe_representations import kernel_probe
from sklearn.decomposition import PCA
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from zooscope.analysis.probing import ridge_probe
from zooscope.autoencoder.layer_statistics import LOG_FLOOR, layer_statistics
from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import StackedParams
from zooscope.weightspace.statistics import weight_statistics_features
from zooscope.zoo.store import INIT_TYPES, CheckpointSet, Zoo

SPLITS = ("train", "val", "test")
PARTS = ("weights", "biases")
PRINCIPAL_COMPONENTS = (16, 32)


def hyperparameters(checkpoint_set: CheckpointSet, with_epoch: bool) -> np.ndarray:
    """[K, F]: init one-hot, log10 lr, log10(wd + 1e-5), and optionally the epoch."""
    p = checkpoint_set.properties
    init = torch.nn.functional.one_hot(p["init"].long().clamp(min=0), len(INIT_TYPES)).double()
    columns = [init, p["lr"].log10()[:, None], (p["wd"] + 1e-5).log10()[:, None]]
    if with_epoch:
        columns.append(p["epoch"][:, None])
    return torch.cat(columns, 1).numpy()


def layer_moments(arch: Architecture, params: StackedParams, parts: tuple[str, ...] = PARTS) -> np.ndarray:
    """[K, F]: per layer, for its weights and/or its biases, the means of w, |w|, w^2 and |w|^3."""
    columns = []
    for layer in arch.parameter_layers():
        keys = {"weights": layer.weight_key, "biases": layer.bias_key}
        for key in (keys[part] for part in parts):
            w = params[key].flatten(1).double()
            columns += [w.mean(1), w.abs().mean(1), (w**2).mean(1), (w.abs() ** 3).mean(1)]
    return torch.stack(columns, 1).numpy()


def with_logs(features: np.ndarray) -> np.ndarray:
    """The features and the log of their magnitudes, floored as the fourth term's targets are."""
    return np.concatenate([features, np.log(np.maximum(np.abs(features), LOG_FLOOR))], 1)


def principal_components(features: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first n principal components of standardised features, fitted on train (no labels)."""
    scaler = StandardScaler().fit(features["train"])
    pca = PCA(n).fit(scaler.transform(features["train"]))
    return {split: pca.transform(scaler.transform(values)) for split, values in features.items()}


def config_oracle(checkpoint_sets: dict[str, CheckpointSet], with_epoch: bool) -> tuple[float, float]:
    """R^2 on val and test of predicting each checkpoint by the mean test accuracy of the training
    checkpoints with the same init, lr and wd (and epoch)."""

    def keys(checkpoint_set: CheckpointSet) -> list[tuple[float, ...]]:
        p = checkpoint_set.properties
        names = ("init", "lr", "wd", "epoch") if with_epoch else ("init", "lr", "wd")
        return list(zip(*(p[name].tolist() for name in names), strict=True))

    by_config: dict[tuple[float, ...], list[float]] = defaultdict(list)
    for key, accuracy in zip(
        keys(checkpoint_sets["train"]), checkpoint_sets["train"].properties["test_acc"].tolist(), strict=True
    ):
        by_config[key].append(accuracy)
    overall = float(checkpoint_sets["train"].properties["test_acc"].mean())
    scores = []
    for split in ("val", "test"):
        prediction = [
            np.mean(by_config[key]) if key in by_config else overall for key in keys(checkpoint_sets[split])
        ]
        scores.append(float(r2_score(checkpoint_sets[split].properties["test_acc"].numpy(), prediction)))
    return scores[0], scores[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", type=Path)
    args = parser.parse_args()
    zoo = Zoo.open(args.zoo)
    checkpoint_sets = {split: zoo.load_checkpoints(zoo.checkpoints(split=split)) for split in SPLITS}
    targets = {split: checkpoint_sets[split].properties["test_acc"].numpy() for split in SPLITS}
    representations = {
        "hyperparameters (init one-hot, log lr, log wd)": lambda p: hyperparameters(p, with_epoch=False),
        "hyperparameters and epoch": lambda p: hyperparameters(p, with_epoch=True),
        "weight statistics (the baseline)": lambda p: (
            weight_statistics_features(zoo.architecture, p.params).double().numpy()
        ),
        # exactly the targets of the fourth training term (zooscope/autoencoder/layer_statistics.py)
        "weight statistics and their logs": lambda p: (
            layer_statistics(zoo.architecture, p.params).double().numpy()
        ),
        "per-layer moments of w, \\|w\\|, w^2, \\|w\\|^3": lambda p: layer_moments(
            zoo.architecture, p.params
        ),
        "per-layer moments and their logs": lambda p: with_logs(layer_moments(zoo.architecture, p.params)),
        "per-layer moments and their logs, weights only": lambda p: with_logs(
            layer_moments(zoo.architecture, p.params, ("weights",))
        ),
        "per-layer moments and their logs, biases only": lambda p: with_logs(
            layer_moments(zoo.architecture, p.params, ("biases",))
        ),
    }
    counts = ", ".join(f"{split} {len(targets[split])}" for split in SPLITS)
    print(f"zoo {args.zoo} ({counts} checkpoints): R^2 for test accuracy, chosen on validation\n")
    print("| representation | dim | ridge: val / test R^2 | RBF kernel ridge: val / test R^2 |")
    print("|---|---|---|---|")
    for with_epoch in (False, True):
        val, test = config_oracle(checkpoint_sets, with_epoch)
        name = "oracle: mean accuracy of training checkpoints with the same init, lr, wd" + (
            " and epoch" if with_epoch else ""
        )
        print(f"| {name} | - | {val:.3f} / {test:.3f} | - |")
    for name, represent in representations.items():
        features = {split: represent(checkpoint_sets[split]) for split in SPLITS}
        linear = ridge_probe(
            features["train"],
            targets["train"],
            features["val"],
            targets["val"],
            features["test"],
            targets["test"],
        )
        kernel_val, kernel_test = kernel_probe(features, targets)
        print(
            f"| {name} | {features['train'].shape[1]} | {linear.r2_val:.3f} / {linear.r2_test:.3f} "
            f"| {kernel_val:.3f} / {kernel_test:.3f} |"
        )
        if name == "weight statistics and their logs":  # an unsupervised summary of the right numbers
            for n in PRINCIPAL_COMPONENTS:
                reduced = principal_components(features, n)
                linear = ridge_probe(
                    reduced["train"],
                    targets["train"],
                    reduced["val"],
                    targets["val"],
                    reduced["test"],
                    targets["test"],
                )
                print(
                    f"| {name}, first {n} principal components | {n} "
                    f"| {linear.r2_val:.3f} / {linear.r2_test:.3f} | - |"
                )


if __name__ == "__main__":
    main()
