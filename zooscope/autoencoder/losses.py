"""The three training losses and their weighted, normalised sum (docs/method.md §4).

L = gamma * L_C + (1 - gamma) * (beta * L_S + (1 - beta) * L_B), each term divided by its own
value on the first batch where it was computed, so all three start near 1 and gamma and beta mean
what they say. beta weighs STRUCTURE: beta = 1 is the structure-only baseline. An optional
fourth term beyond docs/method.md, delta * L_T (layer_statistics.py), is added outside that formula;
delta = 0 (the default) is the paper's loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zooscope.autoencoder.config import BEHAVIOURAL_KINDS, STRUCTURAL_KINDS
from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import StackedParams
from zooscope.population.forward import population_forward
from zooscope.population.relu_gradient import relu_gradient_slope
from zooscope.weightspace.tokens import TokenLayout

KINDS = BEHAVIOURAL_KINDS  # one list of kinds: TrainingConfig checks the same names
# Smallest per-model scale the normalised behavioural kinds divide by.
SCALE_FLOOR = 1e-6


# A network whose logits spread less than this across inputs (standard deviation, averaged over
# classes) does not respond to its input: one output whatever it sees (dead ReLUs or a constant
# output layer). No behavioural loss gets a gradient out of such a reconstruction through its
# true ReLU backward.
UNRESPONSIVE_SPREAD = 1e-3


def logit_spread(logits: torch.Tensor) -> torch.Tensor:
    """[K, N, classes] -> [K]: each network's standard deviation of its logits across the N
    inputs, averaged over classes."""
    return logits.std(dim=1).mean(dim=1)


def _identity(tokens: torch.Tensor) -> torch.Tensor:
    return tokens


class StructuralLoss(nn.Module):
    """L_S: mean squared error over the real values of the tokens (padding masked out).

    kind "mse": the paper's; a checkpoint weighs by the size of its tokens.
    kind "relative": each checkpoint's squared error divided by its own tokens' mean square, so
      every checkpoint weighs alike whatever its scale. On a zoo whose failed models carry
      weights 3 to 25 times larger than the working ones (N(0, 1) inits that never trained), the
      working ones are otherwise a few per cent of the loss (docs/tuning.md, "Why the decoder
      lands on dead networks").
    """

    def __init__(self, mask: torch.Tensor, kind: str = "mse") -> None:
        super().__init__()
        if kind not in STRUCTURAL_KINDS:
            known = ", ".join(STRUCTURAL_KINDS)
            raise ValueError(f"structural loss kind must be one of {known}, not {kind!r}")
        self.kind = kind
        self.register_buffer("mask", mask.to(torch.bool), persistent=False)

    def per_model(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[K]: each model's mean squared error over its real token values (relative: over its
        target's mean square)."""
        mask = self.mask.to(reconstruction.dtype)
        squared = (reconstruction - target).pow(2) * mask
        mse = squared.sum(dim=(1, 2)) / mask.sum()
        if self.kind == "mse":
            return mse
        size = (target.pow(2) * mask).sum(dim=(1, 2)) / mask.sum()
        return mse / size.clamp_min(SCALE_FLOOR)

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.per_model(reconstruction.float(), target.float()).mean()


class BehaviouralLoss(nn.Module):
    """L_B: how differently the reconstructed and the original networks answer the same queries.

    The reconstruction tokens are detokenized into runnable parameters (differentiably) and every
    model of the batch runs in ONE `population_forward` call on the same queries. The original's
    outputs are targets without gradient; compute them once per step with `targets()` and reuse
    them for every view (a permuted view computes the same function as its original).

    kind "mse": mean squared difference of the softmax outputs (the paper's stable choice).
    kind "mse_scaled": "mse" divided, per model, by the variance of its original's softmax outputs,
      so a weak original (nearly flat softmax) weighs as much as a confident one.
    kind "logits": MSE between logits centred per query (softmax ignores a per-query shift) and
      divided by the original's spread of centred logits (per model, no gradient): scale-free, and
      it keeps the ranking of classes, hence the argmax, of weak and strong originals alike.
    kind "kl": distillation, T^2 * KL(original || reconstruction) at temperature T.
    Models whose loss is not finite are dropped from the mean (and from the gradient).
    `activations` ([K] codes, CheckpointSet.activations) runs each model with its own activation
    where a zoo mixes them; None runs every model with `arch.activation`.
    """

    def __init__(
        self,
        arch: Architecture,
        layout: TokenLayout,
        kind: str = "mse",
        temperature: float = 2.0,
        chunk_size: int | None = None,
        to_real: Callable[[torch.Tensor], torch.Tensor] | None = None,
        relu_gradient_slope: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"behavioural loss kind must be one of {', '.join(KINDS)}, not {kind!r}")
        self.arch = arch
        self.layout = layout
        self.kind = kind
        self.temperature = temperature
        self.chunk_size = chunk_size  # models per vmap chunk: bounds memory on big batches
        # Maps the decoder's output tokens to real tokens before they are run (the token
        # normaliser's denormalise); identity when the autoencoder works on raw weights.
        self.to_real = to_real or _identity
        # The reconstructions' ReLUs pass this much gradient where they are off (relu_gradient.py):
        # a dead network's weights then still get one. Targets and values are unchanged.
        self.relu_gradient_slope = relu_gradient_slope

    @torch.no_grad()
    def targets(
        self, params: StackedParams, queries: torch.Tensor, activations: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of the original networks on the queries, [K, N, classes], no gradient."""
        return population_forward(
            self.arch, params, queries, chunk_size=self.chunk_size, activations=activations
        ).float()

    def per_model(
        self,
        reconstruction: torch.Tensor,
        target_logits: torch.Tensor,
        queries: torch.Tensor,
        reference: StackedParams | None = None,
        activations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[K] loss per reconstructed model; non-finite values are left in (see `forward`)."""
        params = self.layout.detokenize(self.to_real(reconstruction.float()), reference=reference)
        with relu_gradient_slope(self.relu_gradient_slope):
            logits = population_forward(
                self.arch, params, queries, chunk_size=self.chunk_size, activations=activations
            ).float()
        return self._compare(logits, target_logits)

    def _compare(self, logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        if self.kind in ("mse", "mse_scaled"):
            target_p = target_logits.softmax(-1)
            mse = (logits.softmax(-1) - target_p).pow(2).mean(dim=(1, 2))
            if self.kind == "mse":
                return mse
            # The floor keeps a constant original (variance ~0) from taking an unbounded weight.
            return mse / target_p.var(dim=(1, 2), unbiased=False).clamp_min(SCALE_FLOOR)
        if self.kind == "logits":
            centred_target = target_logits - target_logits.mean(-1, keepdim=True)
            centred = logits - logits.mean(-1, keepdim=True)
            spread = centred_target.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(SCALE_FLOOR)
            return ((centred - centred_target) / spread).pow(2).mean(dim=(1, 2))
        t = self.temperature
        target_log_p = F.log_softmax(target_logits / t, dim=-1)
        log_p = F.log_softmax(logits / t, dim=-1)
        kl = (target_log_p.exp() * (target_log_p - log_p)).sum(-1)  # [K, N]
        return kl.mean(dim=1) * t * t  # T^2 keeps gradient scale independent of T (Hinton et al.)

    def forward(
        self,
        reconstruction: torch.Tensor,
        target_logits: torch.Tensor,
        queries: torch.Tensor,
        reference: StackedParams | None = None,
        activations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean over the models with a finite loss. `reconstruction` may hold several views of the
        batch ([V*K, T, W] against K targets): the targets are repeated to match.

        A NaN anywhere in a model's forward would put NaN into the shared gradient even when its
        loss is masked out (0 * NaN = NaN in the chain rule), so when some models are not finite the
        finite ones are run again on their own and only that graph carries gradient. The rare path
        costs a second forward; the common path costs nothing extra.
        """
        views = reconstruction.shape[0] // target_logits.shape[0]
        if views > 1:
            target_logits = target_logits.repeat(views, 1, 1)
            if reference is not None:
                reference = {k: v.repeat(views, *([1] * (v.dim() - 1))) for k, v in reference.items()}
        if activations is not None and activations.shape[0] != reconstruction.shape[0]:
            activations = activations.repeat(reconstruction.shape[0] // activations.shape[0])
        losses = self.per_model(reconstruction, target_logits, queries, reference, activations)
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return losses.mean()
        if not bool(finite.any()):
            return losses.new_zeros(())  # nothing to learn from this batch's behaviour
        keep = finite.nonzero().squeeze(1)
        kept_reference = None if reference is None else {k: v[keep] for k, v in reference.items()}
        kept_activations = None if activations is None else activations[keep.to(activations.device)]
        return self.per_model(
            reconstruction[keep], target_logits[keep], queries, kept_reference, kept_activations
        ).mean()


class ContrastiveLoss(nn.Module):
    """L_C: NT-Xent (SimCLR) between the projections of two views of each checkpoint.

    For 2K projections, each one's positive is the other view of the same checkpoint and its
    negatives are the other 2K-2; similarity is cosine divided by the temperature.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        k = z_a.shape[0]
        z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)
        similarity = z @ z.T / self.temperature
        # A projection is not its own negative.
        similarity = similarity.masked_fill(torch.eye(2 * k, dtype=torch.bool, device=z.device), -math.inf)
        positives = torch.cat([torch.arange(k, 2 * k), torch.arange(0, k)]).to(z.device)
        return F.cross_entropy(similarity, positives)


TERMS = ("contrastive", "structural", "behavioural", "statistics")


class CompositeLoss(nn.Module):
    """gamma * L_C/n_C + (1-gamma) * (beta * L_S/n_S + (1-beta) * L_B/n_B) + delta * L_T/n_T.

    n_X is the value of term X on the first batch where it was computed (kept as buffers, so they
    travel with `state_dict()` into training checkpoints and a resumed run divides by the same
    numbers). A term whose weight is zero may be passed as None and is then not needed at all:
    beta = 1 skips L_B, gamma = 0 skips L_C, delta = 0 (the default) skips L_T.
    """

    def __init__(self, gamma: float, beta: float, delta: float = 0.0, eps: float = 1e-12) -> None:
        super().__init__()
        self.gamma = gamma
        self.beta = beta
        self.delta = delta
        self.eps = eps  # floor of a normaliser: a first value of exactly 0 must not divide by 0
        for name in TERMS:
            self.register_buffer(f"normaliser_{name}", torch.tensor(math.nan))

    def normaliser(self, name: str) -> float:
        return float(getattr(self, f"normaliser_{name}"))

    def forget_normaliser(self, name: str) -> None:
        """The term's next finite value becomes its normaliser again."""
        getattr(self, f"normaliser_{name}").fill_(math.nan)

    def rescale_normaliser(self, name: str, factor: float) -> None:
        """Multiply the term's normaliser (a term whose values change units keeps its weight)."""
        getattr(self, f"normaliser_{name}").mul_(factor)

    def normalisers(self) -> dict[str, float | None]:
        return {name: (None if math.isnan(v) else v) for name in TERMS for v in [self.normaliser(name)]}

    def weights(self, beta: float | None = None, delta: float | None = None) -> dict[str, float]:
        beta = self.beta if beta is None else beta
        return {
            "contrastive": self.gamma,
            "structural": (1 - self.gamma) * beta,
            "behavioural": (1 - self.gamma) * (1 - beta),
            "statistics": self.delta if delta is None else delta,
        }

    def forward(
        self,
        contrastive: torch.Tensor | None,
        structural: torch.Tensor | None,
        behavioural: torch.Tensor | None,
        beta: float | None = None,
        statistics: torch.Tensor | None = None,
        delta: float | None = None,
    ) -> torch.Tensor:
        """The total loss; `beta` and `delta` override the configured ones (their schedules move them)."""
        values = {
            "contrastive": contrastive,
            "structural": structural,
            "behavioural": behavioural,
            "statistics": statistics,
        }
        weights = {name: weight for name, weight in self.weights(beta, delta).items() if weight != 0}
        # Check every term before the first normaliser is set: a refused call changes nothing.
        for name, weight in weights.items():
            if values[name] is None:
                raise ValueError(f"the {name} loss has weight {weight:g} but was not computed")
        total: torch.Tensor | None = None
        for name, weight in weights.items():
            value = values[name]
            assert value is not None
            buffer = getattr(self, f"normaliser_{name}")
            if torch.isnan(buffer) and torch.isfinite(value):
                buffer.copy_(value.detach().float().clamp_min(self.eps))
            term = weight * value / buffer
            total = term if total is None else total + term
        if total is None:
            raise ValueError("every loss weight is zero")
        return total
