"""Which representation of a trained autoencoder predicts test accuracy: R^2 on the zoo's test split.

    .venv/bin/python benchmarks/probe_representations.py AUTOENCODER_DIR ZOO_DIR

The property probe is ridge regression on the mean-pooled latent (zooscope/analysis/probing.py). This script
puts other poolings of the same encoder beside it, and a kernel (RBF) ridge probe beside the
linear one, with every regulariser (and kernel width) chosen on the validation split, so one can
see whether the information is in the embedding at all or only not linearly readable, and the
linear probe's R^2 as its training set grows (whether a larger zoo would help). Prints markdown
tables (docs/tuning.md, "Property prediction").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from zooscope.analysis.probing import ridge_probe
from zooscope.autoencoder.artefact import TrainedAutoencoder
from zooscope.networks.architectures import Architecture
from zooscope.population.batching import spans
from zooscope.weightspace.statistics import weight_statistics_features
from zooscope.zoo.store import Zoo

KERNEL_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)
KERNEL_GAMMAS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
BLOCK = 128
RANDOM_FEATURES = 2048
CURVE_SHARES = (0.25, 0.5, 0.75, 1.0)
CURVE_DRAWS = 5


@torch.no_grad()
def representations(ae: TrainedAutoencoder, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Poolings of one block of checkpoints' encoder states."""
    model = ae.model
    tokens = ae.normaliser.normalise(ae.tokens(params))
    hidden = model.encoder(model.token_in(tokens) + model.encoder_positions(ae.positions))
    latents = model.latent_of(hidden)
    layers = ae.positions[:, 1]

    def per_layer(values: torch.Tensor, statistic: str) -> torch.Tensor:
        return torch.cat([getattr(values[:, layers == layer], statistic)(1) for layer in layers.unique()], 1)

    return {
        "latent, mean over tokens (the embedding)": latents.mean(1),
        "latent, mean and std over tokens": torch.cat([latents.mean(1), latents.std(1)], 1),
        "latent, mean per layer": per_layer(latents, "mean"),
        "latent, mean and std per layer": torch.cat(
            [per_layer(latents, "mean"), per_layer(latents, "std")], 1
        ),
        "latent, mean and mean square per layer": torch.cat(
            [per_layer(latents, "mean"), per_layer(latents**2, "mean")], 1
        ),
        "input tokens (standardised, padding included), std per layer": per_layer(tokens, "std"),
        # what mean pooling of ANY per-token function could give, no encoder trained: random ReLU
        # features of each token (its values and its layer) stand in for arbitrary functions
        f"input tokens, mean of {RANDOM_FEATURES} random ReLU features": _random_features(
            tokens, layers
        ).mean(1),
        "latent, all tokens flattened": latents.flatten(1),
        "encoder state before the latent map, mean": hidden.mean(1),
        "contrastive projection head": model.project(latents),
    }


def _random_features(tokens: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
    """[K, T, RANDOM_FEATURES]: relu(x @ R + b) for x = a token's values and its layer (one-hot),
    R and b drawn once from a fixed seed (the same for every block of checkpoints)."""
    one_hot = torch.nn.functional.one_hot(layers, int(layers.max()) + 1).float()
    x = torch.cat([tokens, one_hot.expand(tokens.shape[0], -1, -1)], 2)
    generator = torch.Generator().manual_seed(0)
    projection = torch.randn(x.shape[2], RANDOM_FEATURES, generator=generator) / x.shape[2] ** 0.5
    offset = torch.randn(RANDOM_FEATURES, generator=generator)
    return torch.relu(x @ projection + offset)


def layer_magnitudes(params: dict[str, torch.Tensor], arch: Architecture) -> dict[str, torch.Tensor]:
    """{name: [K]}: each layer's mean |w| of its weights and of its biases."""
    magnitudes = {}
    for layer in arch.parameter_layers():
        for part, key in (("weights", layer.weight_key), ("biases", layer.bias_key)):
            magnitudes[f"{layer.key} {part}"] = params[key].flatten(1).abs().mean(1)
    return magnitudes


def kernel_probe(features: dict[str, np.ndarray], targets: dict[str, np.ndarray]) -> tuple[float, float]:
    best: tuple[float, object] | None = None
    for alpha in KERNEL_ALPHAS:
        for gamma in KERNEL_GAMMAS:
            probe = make_pipeline(StandardScaler(), KernelRidge(alpha=alpha, kernel="rbf", gamma=gamma))
            probe.fit(features["train"], targets["train"])
            score = r2_score(targets["val"], probe.predict(features["val"]))
            if best is None or score > best[0]:
                best = (score, probe)
    assert best is not None
    score, probe = best
    return score, r2_score(targets["test"], probe.predict(features["test"]))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("autoencoder", type=Path)
    parser.add_argument("zoo", type=Path)
    args = parser.parse_args()
    ae, zoo = TrainedAutoencoder.load(args.autoencoder), Zoo.open(args.zoo)
    features: dict[str, dict[str, np.ndarray]] = {}
    targets: dict[str, np.ndarray] = {}
    magnitudes: dict[str, dict[str, np.ndarray]] = {}
    for split in ("train", "val", "test"):
        checkpoint_set = zoo.load_checkpoints(zoo.checkpoints(split=split))
        blocks: dict[str, list[torch.Tensor]] = {}
        for span in spans(len(checkpoint_set.properties["test_acc"]), BLOCK):
            part = {key: value[span] for key, value in checkpoint_set.params.items()}
            for name, value in representations(ae, part).items():
                blocks.setdefault(name, []).append(value)
        blocks["weight statistics (the baseline)"] = [
            weight_statistics_features(ae.architecture, checkpoint_set.params)
        ]
        for name, values in blocks.items():
            features.setdefault(name, {})[split] = torch.cat(values).double().numpy()
        targets[split] = np.asarray(checkpoint_set.properties["test_acc"], dtype=np.float64)
        for name, values in layer_magnitudes(checkpoint_set.params, ae.architecture).items():
            magnitudes.setdefault(name, {})[split] = values.double().numpy()
    print(f"autoencoder {args.autoencoder}, zoo {args.zoo}: R^2 for test accuracy, chosen on validation\n")
    print("| representation | dim | ridge: val / test R^2 | RBF kernel ridge: val / test R^2 |")
    print("|---|---|---|---|")
    for name, f in features.items():
        linear = ridge_probe(
            f["train"], targets["train"], f["val"], targets["val"], f["test"], targets["test"]
        )
        kernel_val, kernel_test = kernel_probe(f, targets)
        print(
            f"| {name} | {f['train'].shape[1]} | {linear.r2_val:.3f} / {linear.r2_test:.3f} "
            f"| {kernel_val:.3f} / {kernel_test:.3f} |"
        )

    # Which whole-layer magnitudes does the embedding carry linearly? (docs/tuning.md, "The C+S+B
    # embedding: which layer magnitudes it carries")
    embedding = features["latent, mean over tokens (the embedding)"]
    print("\n| layer | mean \\|value\\| from the embedding: ridge val / test R^2 |")
    print("|---|---|")
    for name, target in magnitudes.items():
        fit = ridge_probe(
            embedding["train"],
            target["train"],
            embedding["val"],
            target["val"],
            embedding["test"],
            target["test"],
        )
        print(f"| {name} | {fit.r2_val:.3f} / {fit.r2_test:.3f} |")

    # Would a larger zoo help the linear probe? Its R^2 with a part of the training checkpoints:
    # a curve still rising at the whole split says more checkpoints would carry it further.
    print(
        f"\n| representation | test R^2 (ridge) with this share of the training checkpoints, mean of "
        f"{CURVE_DRAWS} draws: {' / '.join(f'{share:g}' for share in CURVE_SHARES)} |"
    )
    print("|---|---|")
    draws = np.random.default_rng(0)
    for name in ("latent, mean over tokens (the embedding)", "weight statistics (the baseline)"):
        f, n = features[name], len(targets["train"])
        curve = []
        for share in CURVE_SHARES:
            scores = []
            for _ in range(CURVE_DRAWS if share < 1 else 1):
                part = draws.permutation(n)[: int(share * n)]
                fit = ridge_probe(
                    f["train"][part],
                    targets["train"][part],
                    f["val"],
                    targets["val"],
                    f["test"],
                    targets["test"],
                )
                scores.append(fit.r2_test)
            curve.append(f"{np.mean(scores):.3f}")
        print(f"| {name} | {' / '.join(curve)} |")


if __name__ == "__main__":
    main()
