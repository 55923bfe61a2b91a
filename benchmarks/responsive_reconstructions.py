"""Whether reconstructed networks still respond to their inputs: the spread of each network's
logits across query images, for the originals and for each autoencoder's reconstructions of them
(docs/tuning.md, "The CNN-s zoo on real MNIST at a compressing latent").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/responsive_reconstructions.py --zoo ZOO \
        [--shrink 0,0.1,0.3] [AE_DIR ...]

A network whose logits do not change with the input (standard deviation across inputs under
1e-3) predicts one class for everything: dead ReLUs or a constant output layer. Through the true
ReLU backward no behavioural loss has a gradient there, whatever its form, so a run that lands in
it stays (TrainingConfig.behavioural_relu_gradient_slope gives it one).
"""

from __future__ import annotations

import argparse

import torch


def spread_of(arch, params, queries: torch.Tensor) -> torch.Tensor:
    """Per model: the standard deviation of its logits across the queries, averaged over classes."""
    from zooscope.autoencoder.losses import logit_spread
    from zooscope.population.forward import population_forward

    with torch.no_grad():
        return logit_spread(population_forward(arch, params, queries))


def shrunk(zoo, originals, factors: list[float], queries: torch.Tensor) -> list[torch.Tensor]:
    """The spread of the originals moved toward the zoo's mean in standardised token space, one per
    factor: what a decoder that shrinks toward the mean (any lossy code does, as PCA does) hands
    the behavioural loss. The standardisation is fitted once, on the training split."""
    from zooscope.autoencoder.normalisation import TokenNormaliser
    from zooscope.weightspace.tokens import TokenLayout

    layout = TokenLayout.of(originals.arch)
    train = zoo.load_checkpoints(zoo.checkpoints(split="train"))
    normaliser = TokenNormaliser.fit(layout, layout.tokenize(train.params), kind="tensor")
    tokens = normaliser.normalise(layout.tokenize(originals.params))
    return [
        spread_of(originals.arch, layout.detokenize(normaliser.denormalise(tokens * factor)), queries)
        for factor in factors
    ]


def main() -> None:
    from zooscope.autoencoder.artefact import TrainedAutoencoder
    from zooscope.autoencoder.losses import UNRESPONSIVE_SPREAD
    from zooscope.networks.datasets import QuerySampler
    from zooscope.zoo.store import Zoo

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo", required=True)
    parser.add_argument(
        "--split", default="train", help="checkpoints of this split (train: the batches it learned on)"
    )
    parser.add_argument("--checkpoints", type=int, default=64)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument(
        "--shrink",
        default="",
        help="comma-separated factors s: also the originals moved toward the zoo's mean, s x their "
        "standardised tokens (per-tensor standardisation fitted on the training split; 0: the mean)",
    )
    parser.add_argument("autoencoders", nargs="*")
    args = parser.parse_args()

    zoo = Zoo.open(args.zoo)
    records = zoo.checkpoints(split=args.split)[: args.checkpoints]
    originals = zoo.load_checkpoints(records)
    queries = QuerySampler(zoo.dataset(), n=args.queries).sample(torch.Generator().manual_seed(0))
    rows = [("originals", spread_of(originals.arch, originals.params, queries))]
    factors = [float(text) for text in args.shrink.split(",") if text]
    if factors:
        for factor, spread in zip(factors, shrunk(zoo, originals, factors, queries), strict=True):
            rows.append((f"originals shrunk to {factor:g} x their standardised tokens", spread))
    for path in args.autoencoders:
        autoencoder = TrainedAutoencoder.load(path)
        with torch.no_grad():
            reconstructed = autoencoder.reconstruct_params(originals.params)
        rows.append((path, spread_of(originals.arch, reconstructed, queries)))
    print(
        f"{len(records)} {args.split} checkpoints of {args.zoo}, {args.queries} queries of the training split"
    )
    print()
    dead = f"share that do not respond (spread < {UNRESPONSIVE_SPREAD:g})"
    print(f"| networks | logit spread across inputs, median | {dead} |")
    print("|---|---|---|")
    for name, spread in rows:
        print(f"| {name} | {spread.median():.4f} | {(spread < UNRESPONSIVE_SPREAD).float().mean():.0%} |")


if __name__ == "__main__":
    main()
