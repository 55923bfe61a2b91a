"""Sampling new models: a kernel density estimate over the latents of good checkpoints.

Anchors are checkpoints whose test accuracy passes a threshold (docs/method.md §8). Their per-token
latents, flattened to one vector each, are the points of a Gaussian KDE; samples are decoded into
weights and evaluated; in a zoo that mixes activations, each sample with the activation of the
anchor its kernel is centred on. The paper's generated models collapsed onto a few points
(diversity 10-15x below the zoo, docs/method.md §9). The bandwidth multiplier is the knob that
trades accuracy for diversity, and `diversity_curve` measures that trade-off setting by setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from zooscope.analysis.evaluation import checkpoint_name, json_safe, predict
from zooscope.errors import ArtefactError, ZooscopeError
from zooscope.networks.architectures import ACTIVATION_NAMES, Architecture
from zooscope.networks.parameters import FlatLayout, StackedParams, n_models
from zooscope.population.batching import concat, map_models, spans, take
from zooscope.progress import ProgressFn, report, scaled
from zooscope.version import code_version

if TYPE_CHECKING:
    from zooscope.autoencoder.artefact import TrainedAutoencoder
    from zooscope.networks.datasets import ImageDataset
    from zooscope.zoo.store import CheckpointSet, Zoo

# Anchor thresholds on test accuracy. SVHN, CIFAR-10, EuroSAT: the paper's (docs/method.md §8). Ours for
# the rest: about the upper third of a zoo of that data set (digits zoo: mean 0.76, max 0.99).
DEFAULT_ACCURACY_THRESHOLDS: dict[str, float] = {
    "svhn": 0.8,
    "cifar10": 0.6,
    "eurosat": 0.7,
    "digits": 0.9,
    "mnist": 0.95,
    "fashion_mnist": 0.8,
}
# Data sets without a default: anchors are the checkpoints at or above this accuracy quantile.
FALLBACK_ANCHOR_QUANTILE = 0.75
# With fewer anchors than this above the threshold, the best checkpoints are used instead (a KDE
# over one point is that point) and the report says so.
MIN_ANCHORS = 2
# The default settings of diversity_curve: bandwidth multipliers from "decode the anchors" (0) to
# 8x Scott's rule (on the digits zoo, 2x barely moved diversity: the decoder contracts latents).
DEFAULT_CURVE_SETTINGS = (0.0, 1.0, 2.0, 4.0, 8.0)
REPORT_VERSION = 1


# ---- the density ------------------------------------------------------------------------------
@dataclass
class LatentKDE:
    """A Gaussian KDE with a diagonal kernel over flattened latents.

    `bandwidths` [D] is the kernel's standard deviation in each dimension. Scott's rule is applied
    per dimension, h_d = sigma_d * K^(-1/5): the joint rule's factor K^(-1/(D+4)) tends to 1 in
    thousands of dimensions, and with fewer anchors than dimensions a full covariance is singular.
    """

    anchors: torch.Tensor  # [K, D]
    bandwidths: torch.Tensor  # [D]
    latent_shape: tuple[int, ...]  # shape of one anchor's latents, e.g. (T, L)

    @classmethod
    def fit(
        cls,
        latents: torch.Tensor,
        bandwidth: float | str = "scott",
        multiplier: float = 1.0,
        spread: float = 1.0,
    ) -> LatentKDE:
        """`latents` [K, ...] (e.g. [K, T, L]); `bandwidth` "scott" or an absolute standard deviation.

        `spread` moves the kernel centres away from the anchors' mean (mean + spread * (anchor - mean)):
        above 1 it extrapolates, a second diversity knob beside the bandwidth multiplier.
        """
        if latents.shape[0] < 1:
            raise ZooscopeError("a KDE needs at least one anchor")
        if multiplier < 0:
            raise ValueError(f"the bandwidth multiplier must be >= 0, got {multiplier}")
        points = latents.detach().flatten(1).to(torch.float32).cpu()
        k, d = points.shape
        if bandwidth == "scott":
            sigma = points.std(dim=0, unbiased=True) if k > 1 else torch.zeros(d)
            h = sigma * k ** (-1.0 / 5.0)
        elif isinstance(bandwidth, int | float) and not isinstance(bandwidth, bool) and bandwidth >= 0:
            h = torch.full((d,), float(bandwidth))
        else:
            raise ValueError(f"bandwidth must be 'scott' or a non-negative number, got {bandwidth!r}")
        if spread < 0:
            raise ValueError(f"spread must be >= 0, got {spread}")
        if spread != 1.0:  # spread 1 keeps the anchors bit for bit (no rounding through the mean)
            centre = points.mean(dim=0, keepdim=True)
            points = centre + spread * (points - centre)
        return cls(points, h * multiplier, tuple(latents.shape[1:]))

    @property
    def dim(self) -> int:
        return self.anchors.shape[1]

    def sample(self, n: int, seed: int | torch.Generator = 0) -> torch.Tensor:
        """n samples [n, *latent_shape]: a random anchor plus Gaussian noise of the bandwidths."""
        return self.sample_from_anchors(n, seed)[0]

    def sample_from_anchors(
        self, n: int, seed: int | torch.Generator = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample`'s n samples, and [n] the index of the anchor each one's kernel is centred on."""
        generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        index = torch.randint(self.anchors.shape[0], (n,), generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        return (self.anchors[index] + noise * self.bandwidths).reshape(n, *self.latent_shape), index

    def log_density(self, points: torch.Tensor) -> torch.Tensor:
        """log p(x) of points [M, ...] under the KDE (dimensions with zero bandwidth are ignored)."""
        x = points.flatten(1).to(torch.float32).cpu()
        live = self.bandwidths > 0
        h = self.bandwidths[live]
        z = (x[:, None, live] - self.anchors[None, :, live]) / h
        per_anchor = -0.5 * (z**2).sum(-1) - torch.log(h).sum() - 0.5 * live.sum() * math.log(2 * math.pi)
        return torch.logsumexp(per_anchor, dim=1) - math.log(self.anchors.shape[0])


# ---- diversity ----------------------------------------------------------------------------------
def mean_pairwise_l2(flat: torch.Tensor) -> float:
    """Mean L2 distance over all pairs of rows of [K, P] (NaN for fewer than two rows)."""
    if flat.shape[0] < 2:
        return math.nan
    return float(torch.pdist(flat.double()).mean())


def mean_pairwise_disagreement(predictions: torch.Tensor, n_classes: int, block: int = 4096) -> float:
    """Mean over pairs of models of the fraction of inputs on which they predict different classes."""
    k, n = predictions.shape
    if k < 2:
        return math.nan
    agree = torch.zeros(k, k, dtype=torch.float64)
    for s in spans(n, block):  # one-hot products in blocks of inputs keep memory at K*block*C
        onehot = torch.nn.functional.one_hot(predictions[:, s], n_classes).flatten(1).double()
        agree += onehot @ onehot.T
    off_diagonal = agree.sum() - agree.diagonal().sum()
    return float(1.0 - off_diagonal / (k * (k - 1) * n))


def diversity(arch: Architecture, params: StackedParams, predictions: torch.Tensor, n_classes: int) -> dict:
    return {
        "weight_l2": mean_pairwise_l2(FlatLayout.of(arch).flatten(params)),
        "disagreement": mean_pairwise_disagreement(predictions, n_classes),
    }


# ---- the report ---------------------------------------------------------------------------------
@dataclass
class GenerationReport:
    accuracies: list[float]  # per generated model, on the full test split
    accuracy: dict[str, float | None]  # mean, std, max, min, quantiles of `accuracies`
    anchors: dict[str, Any]  # count, threshold, relaxed, accuracy summary
    diversity: dict[str, Any]  # {"generated": {...}, "anchors": {...}, "weight_l2_ratio": ...}
    settings: dict[str, Any]  # bandwidth, multiplier, n_samples, seed, split
    params: StackedParams | None = None  # the generated weights (not serialised by to_dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # Per generated model, the index (into anchors["checkpoints"]) of the anchor its kernel is on.
    anchor_of: list[int] = field(default_factory=list)
    # The anchors themselves, latents included (not serialised: embedding_map.py places them).
    anchor_set: Anchors | None = None
    # Per generated model, the activation it was evaluated with and is to run with: its anchor's
    # (in a zoo that mixes activations, `metadata["architecture"]` names the commonest only).
    activations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "code_version": code_version(),
            "settings": self.settings,
            "metadata": self.metadata,
            "accuracy": self.accuracy,
            "anchors": self.anchors,
            "diversity": json_safe(self.diversity),
            "accuracies": self.accuracies,
            "anchor_of": self.anchor_of,
            "activations": self.activations,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationReport:
        if data.get("version") != REPORT_VERSION:
            raise ArtefactError(f"generation report version {data.get('version')!r} is not {REPORT_VERSION}")
        return cls(
            accuracies=list(data["accuracies"]),
            accuracy=data["accuracy"],
            anchors=data["anchors"],
            diversity=data["diversity"],
            settings=data["settings"],
            metadata=data.get("metadata", {}),
            anchor_of=list(data.get("anchor_of", [])),
            activations=list(data.get("activations", [])),
        )


def accuracy_summary(accuracies: torch.Tensor) -> dict[str, float | None]:
    if accuracies.numel() == 0:
        return {"mean": None, "std": None, "max": None, "min": None, "q10": None, "q50": None, "q90": None}
    a = accuracies.double()
    q = torch.quantile(a, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {
        "mean": float(a.mean()),
        "std": float(a.std(unbiased=False)),
        "max": float(a.max()),
        "min": float(a.min()),
        "q10": float(q[0]),
        "q50": float(q[1]),
        "q90": float(q[2]),
    }


# ---- anchors ------------------------------------------------------------------------------------
@dataclass
class Anchors:
    """The good checkpoints a KDE is fitted to, with what generation compares against."""

    params: StackedParams
    accuracies: torch.Tensor  # [K]
    latents: torch.Tensor  # [K, T, L]
    threshold: float
    relaxed: bool  # True when too few passed the threshold and the best ones were taken instead
    diversity: dict[str, float]
    # Each anchor's name (model_id@epoch, as reports name zoo checkpoints); empty when the
    # checkpoint set has no records.
    checkpoints: list[str] = field(default_factory=list)
    # [K] activation codes where the anchors' zoo mixes activations (CheckpointSet.activations);
    # None: every anchor runs with the architecture's.
    activations: torch.Tensor | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "count": int(self.accuracies.numel()),
            "threshold": self.threshold,
            "relaxed": self.relaxed,
            "accuracy": accuracy_summary(self.accuracies),
            # Per anchor, so a report can draw the anchors' histogram beside the generated models'.
            "accuracies": [float(a) for a in self.accuracies],
            "checkpoints": list(self.checkpoints),
        }


def default_threshold(dataset_name: str | None, accuracies: torch.Tensor) -> float:
    if dataset_name in DEFAULT_ACCURACY_THRESHOLDS:
        return DEFAULT_ACCURACY_THRESHOLDS[dataset_name]
    return float(torch.quantile(accuracies.double(), FALLBACK_ANCHOR_QUANTILE))


def _checkpoints_of(zoo_or_checkpoints: Zoo | CheckpointSet, split: str) -> CheckpointSet:
    if hasattr(zoo_or_checkpoints, "load_checkpoints"):
        zoo = zoo_or_checkpoints
        return zoo.load_checkpoints(zoo.checkpoints(split=split))
    return zoo_or_checkpoints


def _latents(ae: TrainedAutoencoder, params: StackedParams, batch_models: int) -> torch.Tensor:
    return map_models(lambda p: ae.latents(p).detach().cpu(), params, batch_models)


def _decode(ae: TrainedAutoencoder, latents: torch.Tensor, batch_models: int) -> StackedParams:
    parts = []
    for s in spans(latents.shape[0], batch_models):
        decoded = ae.decode_latents(latents[s])
        parts.append({k: v.detach().cpu() for k, v in decoded.items()})
    return concat(parts)


def select_anchors(
    ae: TrainedAutoencoder,
    checkpoints: CheckpointSet,
    dataset: ImageDataset,
    accuracy_threshold: float | None = None,
    *,
    batch_models: int = 256,
    device: torch.device | str | None = None,
) -> Anchors:
    """The checkpoints at or above the threshold, encoded, with their diversity."""
    arch = ae.architecture
    activations = getattr(checkpoints, "activations", None)
    predictions = predict(
        arch,
        checkpoints.params,
        dataset.test.x,
        batch_models=batch_models,
        device=device,
        activations=activations,
    )
    accuracies = (predictions == dataset.test.y).double().mean(1)
    threshold = (
        accuracy_threshold
        if accuracy_threshold is not None
        else default_threshold(getattr(dataset, "name", None), accuracies)
    )
    chosen = torch.nonzero(accuracies >= threshold).flatten()
    relaxed = chosen.numel() < MIN_ANCHORS
    if relaxed:  # a KDE over fewer points is no density; take the best checkpoints instead
        count = min(n_models(checkpoints.params), max(MIN_ANCHORS, math.ceil(0.1 * accuracies.numel())))
        chosen = accuracies.argsort(descending=True)[:count]
    params = take(checkpoints.params, chosen)
    records = getattr(checkpoints, "records", None) or []
    return Anchors(
        params=params,
        accuracies=accuracies[chosen],
        latents=_latents(ae, params, batch_models),
        threshold=float(threshold),
        relaxed=relaxed,
        diversity=diversity(arch, params, predictions[chosen], dataset.n_classes),
        checkpoints=[checkpoint_name(records[i]) for i in chosen.tolist()] if records else [],
        activations=None if activations is None else activations[chosen],
    )


def sample_and_evaluate(
    ae: TrainedAutoencoder,
    anchors: Anchors,
    dataset: ImageDataset,
    n_samples: int,
    *,
    bandwidth: float | str = "scott",
    multiplier: float = 1.0,
    spread: float = 1.0,
    seed: int = 0,
    batch_models: int = 256,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
) -> GenerationReport:
    """Fit the KDE to the anchors, draw n_samples, decode and evaluate them."""
    kde = LatentKDE.fit(anchors.latents, bandwidth, multiplier, spread)
    report(progress, 0.1, f"decoding {n_samples} samples")
    samples, anchor_of = kde.sample_from_anchors(n_samples, seed)
    generated = _decode(ae, samples, batch_models)
    # A sample is decoded from around one anchor: it runs with that anchor's activation.
    own = None if anchors.activations is None else anchors.activations[anchor_of]
    report(progress, 0.5, "evaluating generated models")
    predictions = predict(
        ae.architecture, generated, dataset.test.x, batch_models=batch_models, device=device, activations=own
    )
    accuracies = (predictions == dataset.test.y).double().mean(1)
    gen_diversity = diversity(ae.architecture, generated, predictions, dataset.n_classes)
    anchor_l2 = anchors.diversity["weight_l2"]
    report(progress, 1.0, "generated")
    return GenerationReport(
        accuracies=[float(a) for a in accuracies],
        accuracy=accuracy_summary(accuracies),
        anchors=anchors.describe(),
        diversity={
            "generated": gen_diversity,
            "anchors": anchors.diversity,
            "weight_l2_ratio": gen_diversity["weight_l2"] / anchor_l2 if anchor_l2 else math.nan,
        },
        settings={
            "bandwidth": bandwidth,
            "multiplier": multiplier,
            "spread": spread,
            "n_samples": n_samples,
            "seed": seed,
            "mean_kernel_std": float(kde.bandwidths.mean()),
        },
        params=generated,
        metadata={"architecture": ae.architecture.to_dict(), "dataset": getattr(dataset, "name", None)},
        anchor_of=[int(i) for i in anchor_of],
        anchor_set=anchors,
        activations=(
            [ae.architecture.activation] * n_samples
            if own is None
            else [ACTIVATION_NAMES[code] for code in own.tolist()]
        ),
    )


# ---- high-level calls -------------------------------------------------------------------------
@torch.no_grad()
def generate(
    ae: TrainedAutoencoder,
    zoo_or_checkpoints: Zoo | CheckpointSet,
    dataset: ImageDataset | None = None,
    n_samples: int = 100,
    accuracy_threshold: float | None = None,
    bandwidth: float | str = "scott",
    diversity: float = 1.0,
    seed: int = 0,
    progress: ProgressFn | None = None,
    *,
    spread: float = 1.0,
    split: str = "train",
    batch_models: int = 256,
) -> GenerationReport:
    """Generate n_samples models from the latents of the good checkpoints of a zoo or checkpoint set.

    `accuracy_threshold`: anchors' minimum test accuracy (default: per data set,
    DEFAULT_ACCURACY_THRESHOLDS). `bandwidth`: "scott" or an absolute kernel std. `diversity`:
    the bandwidth multiplier, 0 decodes the anchors themselves; larger trades accuracy for
    diversity. `spread`: > 1 pushes the kernel centres away from the anchors' mean (see
    LatentKDE.fit). `split`: which split of a zoo gives the anchors.
    """
    if n_samples < 1:
        raise ValueError("n_samples must be at least 1")
    if dataset is None:
        if not hasattr(zoo_or_checkpoints, "dataset"):
            raise ZooscopeError("a checkpoint set needs its data set: pass dataset=")
        dataset = zoo_or_checkpoints.dataset()
    device = getattr(ae, "device", None)
    checkpoints = _checkpoints_of(zoo_or_checkpoints, split)
    report(progress, 0.0, "encoding anchors")
    anchors = select_anchors(
        ae, checkpoints, dataset, accuracy_threshold, batch_models=batch_models, device=device
    )
    result = sample_and_evaluate(
        ae,
        anchors,
        dataset,
        n_samples,
        bandwidth=bandwidth,
        multiplier=diversity,
        spread=spread,
        seed=seed,
        batch_models=batch_models,
        device=device,
        progress=scaled(progress, 0.3, 1.0),
    )
    result.settings["split"] = split
    return result


@torch.no_grad()
def diversity_curve(
    ae: TrainedAutoencoder,
    zoo_or_checkpoints: Zoo | CheckpointSet,
    dataset: ImageDataset | None = None,
    settings: Sequence[float] = DEFAULT_CURVE_SETTINGS,
    n_samples: int = 50,
    seed: int = 0,
    *,
    accuracy_threshold: float | None = None,
    bandwidth: float | str = "scott",
    knob: str = "bandwidth",
    batch_models: int = 256,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Accuracy against diversity for each setting (same anchors, same seed).

    `knob` "bandwidth": settings are bandwidth multipliers (spread 1); "spread": settings are
    spreads away from the anchors' mean (multiplier 1).
    """
    if knob not in ("bandwidth", "spread"):
        raise ValueError(f"knob must be 'bandwidth' or 'spread', not {knob!r}")
    if dataset is None:
        dataset = zoo_or_checkpoints.dataset()
    device = getattr(ae, "device", None)
    anchors = select_anchors(
        ae,
        _checkpoints_of(zoo_or_checkpoints, "train"),
        dataset,
        accuracy_threshold,
        batch_models=batch_models,
        device=device,
    )
    rows = []
    for i, setting in enumerate(settings):
        multiplier, spread = (float(setting), 1.0) if knob == "bandwidth" else (1.0, float(setting))
        result = sample_and_evaluate(
            ae, anchors, dataset, n_samples, bandwidth=bandwidth, multiplier=multiplier, spread=spread,
            seed=seed, batch_models=batch_models, device=device,
        )  # fmt: skip
        rows.append(
            json_safe(
                {
                    "knob": knob,
                    "setting": float(setting),
                    "multiplier": multiplier,
                    "spread": spread,
                    "accuracy_mean": result.accuracy["mean"],
                    "accuracy_max": result.accuracy["max"],
                    "accuracy_min": result.accuracy["min"],
                    "weight_l2": result.diversity["generated"]["weight_l2"],
                    "disagreement": result.diversity["generated"]["disagreement"],
                    "anchor_weight_l2": anchors.diversity["weight_l2"],
                    "anchor_disagreement": anchors.diversity["disagreement"],
                    "weight_l2_ratio": result.diversity["weight_l2_ratio"],
                    "anchor_accuracy_max": float(anchors.accuracies.max()),
                    "n_anchors": int(anchors.accuracies.numel()),
                }
            )
        )
        report(progress, (i + 1) / len(settings), f"{knob} {setting}")
    return rows
