"""How much of the differences between a zoo's models is still their random initialisation
(docs/tuning.md, "What bounds specificity on the CNN-s zoo").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/init_share.py --zoo ZOO [--split test]

Each model's init is drawn again from its record (init scheme, seed), exactly as the zoo's trainer
drew it (zooscope.networks.architectures.initialise on a fresh module). For each checkpoint epoch
it prints, over the models of the split: the weights' spread about their mean, the share of that
spread the inits already had (R^2 of each model's deviation from the mean by its init's deviation),
and how far training moved each model from its init relative to the init's norm. Then, per latent
size (a ratio of the parameter count), what the init costs a code of that size: the init variance
the best linear code of that many numbers loses (an i.i.d. init has a diagonal covariance, so that
code keeps the parameters of largest init variance), and how much each last-epoch model still
agrees with itself once its own init is taken off the parameters such a code loses, beside the
models' agreement with each other.

Why it matters: a draw of an i.i.d. init is noise spread over every parameter, with no low-
dimensional structure to learn from other models. Where it is most of what tells two trained
models apart, a code shorter than the parameters cannot keep what makes a checkpoint itself, and
an autoencoder that compresses keeps the zoo's typical function instead (docs/method.md §7,
specificity).
"""

from __future__ import annotations

import argparse

import torch


def init_seed(record) -> int:
    """The seed a model's init was drawn from: its own, or its shared init's (ModelSpec.init_seed,
    kept in the record's extra)."""
    return getattr(record, "extra", {}).get("init_seed", record.seed)


def initial_weights(arch, layout, records) -> torch.Tensor:
    """[K, P] the inits of `records`' models, drawn as the zoo's trainer drew them."""
    from zooscope.zoo.training import initial_weights as draw

    return draw(arch, layout, records, [torch.Generator().manual_seed(init_seed(r)) for r in records])


def share_table(inits: torch.Tensor, trained: torch.Tensor) -> dict[str, float]:
    """Over K models ([K, P] each): spread of the trained weights about their mean, the R^2 of that
    spread by the inits' deviations, and the mean of ||trained - init|| / ||init||."""
    dev_w = trained - trained.mean(0)
    dev_0 = inits - inits.mean(0)
    spread = dev_w.pow(2).sum(1).mean()
    explained = 1.0 - (dev_w - dev_0).pow(2).sum(1).mean() / spread
    moved = ((trained - inits).norm(dim=1) / inits.norm(dim=1)).mean()
    return {
        "spread": float(spread.sqrt()),
        "init_spread": float(dev_0.pow(2).sum(1).mean().sqrt()),
        "init_share": float(explained),
        "moved": float(moved),
    }


def init_variances(arch, layout, records, draws: int) -> torch.Tensor:
    """[P] each parameter's variance over `draws` fresh draws of the records' init schemes (seeds
    unused by any zoo)."""
    from types import SimpleNamespace

    schemes = [records[i % len(records)].init for i in range(draws)]
    fresh = [SimpleNamespace(init=scheme, seed=2**40 + i) for i, scheme in enumerate(schemes)]
    return initial_weights(arch, layout, fresh).var(dim=0)


def lost_coordinates(variances: torch.Tensor, ratio: float) -> torch.Tensor:
    """The parameters whose init no linear code of ratio x P numbers keeps. An i.i.d. init has a
    diagonal covariance, so the best such code keeps the k parameters of largest init variance."""
    order = variances.argsort(descending=True)
    return order[round(ratio * len(order)) :]


def agreement_without_init(zoo, arch, layout, trained, inits, lost) -> tuple[float, float]:
    """(agreement of each model with itself once its own init is taken off the `lost` parameters,
    mean agreement of the models with each other), on the zoo's test images."""
    from zooscope.analysis.evaluation import agreement_matrix, predict

    x = zoo.dataset().test.x
    stripped = trained.clone()
    stripped[:, lost] -= inits[:, lost]
    own = predict(arch, layout.unflatten(trained), x)
    moved = predict(arch, layout.unflatten(stripped), x)
    each_other = agreement_matrix(own, own)
    k = own.shape[0]
    return float((own == moved).double().mean()), float((each_other.sum() - k) / (k * (k - 1)))


def main() -> None:
    from zooscope.machine import cpu_summary
    from zooscope.networks.parameters import FlatLayout
    from zooscope.zoo.store import Zoo

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--ratios", default="0.31,0.5", help="comma-separated latent sizes over the parameter count"
    )
    parser.add_argument("--draws", type=int, default=1000, help="fresh inits for the per-parameter variance")
    args = parser.parse_args()

    zoo = Zoo.open(args.zoo)
    models = [m for m in zoo.models if m.split == args.split and not m.diverged]
    arch = zoo.architecture
    layout = FlatLayout.of(arch)
    inits = initial_weights(arch, layout, models)
    print(
        f"zoo {args.zoo}: {arch.name}, {layout.size:,} parameters, {len(models)} {args.split} models "
        f"(inits {', '.join(sorted({m.init for m in models}))}); machine: {cpu_summary()}; "
        f"torch {torch.__version__}"
    )
    print()
    print(
        "| epoch | weights' spread about the mean (L2) | the inits' spread | share of the spread the "
        "inits explain (R^2) | moved from init / init norm |"
    )
    print("|---|---|---|---|---|")
    for epoch in sorted({e for m in models for e in m.checkpoint_epochs}):
        records = [r for r in zoo.checkpoints(split=args.split) if r.epoch == epoch]
        by_model = {r.model_id: r for r in records}
        kept = [i for i, m in enumerate(models) if m.model_id in by_model]
        trained = layout.flatten(zoo.load_checkpoints([by_model[models[i].model_id] for i in kept]).params)
        row = share_table(inits[kept], trained)
        print(
            f"| {epoch} | {row['spread']:.2f} | {row['init_spread']:.2f} | {row['init_share']:.1%} | "
            f"{row['moved']:.1%} |"
        )
    seeds = [init_seed(m) for m in models]
    if len(set(seeds)) < len(seeds):
        print()
        print(
            f"The models share {len(set(seeds))} init draw(s) (a shared-init zoo): a code learns them from "
            "the training split, so no init is lost to it and the latent-size table does not apply."
        )
        return
    ratios = [float(text) for text in args.ratios.split(",") if text]
    variances = init_variances(arch, layout, models, args.draws)
    last = max(e for m in models for e in m.checkpoint_epochs)
    records = {r.model_id: r for r in zoo.checkpoints(split=args.split) if r.epoch == last}
    kept = [i for i, m in enumerate(models) if m.model_id in records]
    trained = layout.flatten(zoo.load_checkpoints([records[models[i].model_id] for i in kept]).params)
    print()
    print(
        f"Epoch {last}, {len(kept)} models; init variance per parameter over {args.draws} fresh draws. "
        "'Without': each model with its own init taken off the parameters such a code loses."
    )
    print()
    print(
        "| latent / parameters | init spread no linear code of that size keeps (L2) | agreement of a "
        "model with itself without it (%) | agreement of the models with each other (%) |"
    )
    print("|---|---|---|---|")
    for ratio in ratios:
        lost = lost_coordinates(variances, ratio)
        itself, each_other = agreement_without_init(zoo, arch, layout, trained, inits[kept], lost)
        print(
            f"| {ratio:g} | {float(variances[lost].sum().sqrt()):.2f} | {100 * itself:.1f} | "
            f"{100 * each_other:.1f} |"
        )


if __name__ == "__main__":
    main()
