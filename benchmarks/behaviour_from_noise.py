"""Can the behavioural loss alone pull networks to their originals' function on a zoo? Optimises
tokens directly (no autoencoder), Adam on the behavioural loss only, from the training
checkpoints' own standardised tokens plus Gaussian noise (`--start originals`) or from the zoo's
mean network plus noise (`--start mean`: zero standardised tokens, where a decoder starts);
prints the loss, the agreement with the originals, the share of networks that do not respond to
their input and the gradient's norm (docs/tuning.md, "The CNN-s zoo on real MNIST at a
compressing latent"). `--relu-gradient-slope` runs the loss with the leaky ReLU backward
(zooscope/population/relu_gradient.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/behaviour_from_noise.py --zoo ZOO \
        [--kind mse|kl|logits] [--start originals|mean] [--relu-gradient-slope S]
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    from zooscope.autoencoder.losses import UNRESPONSIVE_SPREAD, BehaviouralLoss, logit_spread
    from zooscope.autoencoder.normalisation import TokenNormaliser
    from zooscope.networks.datasets import QuerySampler
    from zooscope.population.batching import take
    from zooscope.population.forward import population_forward
    from zooscope.weightspace.tokens import TokenLayout
    from zooscope.zoo.store import Zoo

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--zoo", required=True)
    parser.add_argument("--noise", type=float, default=1.0, help="standard deviation, in standardised units")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--kind", default="mse", help="the behavioural loss's form")
    parser.add_argument("--checkpoints", type=int, default=64)
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--start", choices=("originals", "mean"), default="originals")
    parser.add_argument("--relu-gradient-slope", type=float, default=0.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    zoo = Zoo.open(args.zoo)
    train = zoo.load_checkpoints(zoo.checkpoints(split="train"))
    arch, original_params = train.arch, take(train.params, slice(0, args.checkpoints))
    layout = TokenLayout.of(arch)
    # Standardised as training does (TrainingConfig.token_normalisation "tensor", fitted on the split).
    normaliser = TokenNormaliser.fit(layout, layout.tokenize(train.params), kind="tensor")
    tokens = normaliser.normalise(layout.tokenize(original_params))
    if args.start == "mean":
        tokens = torch.zeros_like(tokens)
    tokens = (tokens + args.noise * torch.randn_like(tokens) * layout.mask).requires_grad_(True)
    sampler = QuerySampler(zoo.dataset(), n=args.queries)
    loss_fn = BehaviouralLoss(
        arch,
        layout,
        args.kind,
        to_real=normaliser.denormalise,
        relu_gradient_slope=args.relu_gradient_slope,
    )
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam([tokens], lr=args.lr)
    print("| step | behavioural loss | agreement with the originals | not responding | gradient norm |")
    print("|---|---|---|---|---|")
    for step in range(args.steps + 1):
        queries = sampler.sample(generator)
        targets = loss_fn.targets(original_params, queries)
        loss = loss_fn(tokens, targets, queries)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 25 == 0:
            with torch.no_grad():
                rebuilt = layout.detokenize(normaliser.denormalise(tokens.detach()))
                logits = population_forward(arch, rebuilt, queries)
                agreement = (logits.argmax(-1) == targets.argmax(-1)).float().mean().item()
                dead = (logit_spread(logits) < UNRESPONSIVE_SPREAD).float().mean().item()
            print(
                f"| {step} | {loss.item():.4g} | {agreement:.1%} | {dead:.0%} "
                f"| {tokens.grad.norm().item():.2e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
