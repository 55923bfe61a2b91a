"""How far the first-order account of a network's function holds around its weights
(docs/method.md §4 and §9.4).

The case for the behavioural loss is a first-order one (§4): near the original weights, the change
of the outputs is the Jacobian of the outputs with respect to the weights times the weight error,
so some weight errors matter far more than others. This module measures where that account stops
holding. Each original's weights and biases move by a grid of L2 norms along two directions per
model: a random one (a Gaussian draw) and the model's own reconstruction error (reconstruction
minus original), each normalised to unit length. At every norm it reports the perturbed models'
accuracy and their agreement with the unperturbed original, the measured change of the logits,
the first-order prediction of that change (the Jacobian-vector product, torch.func.jvp, times the
norm) and how far apart the two are. The error direction is also measured at each model's own
error norm, which is the reconstruction itself.

Logits, not softmax outputs: a ReLU network's logits are piecewise linear in its weights, so the
prediction is exact until a unit, or a max-pool's winner, changes, and what breaks it is the
network's own nonlinearity rather than the softmax's. Everything runs in float64, so that rounding
does not pass for nonlinearity at small norms. The forward is population_forward_vmap (vmap over
functional_call), the reference implementation, which forward-mode differentiation goes through;
models run in blocks of models and of inputs. BatchNorm running statistics are not perturbed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch.func import jvp

from zooscope.analysis.evaluation import json_safe, reconstruct_with_tokens, summarise
from zooscope.errors import ZooscopeError
from zooscope.networks.architectures import ACTIVATION_NAMES, Architecture
from zooscope.networks.parameters import FlatLayout, StackedParams
from zooscope.population.batching import ACTIVATION_BUDGET, inputs_per_call, spans
from zooscope.population.forward import population_forward_vmap
from zooscope.progress import ProgressFn, report

if TYPE_CHECKING:  # only for annotations: the library modules import each other lazily
    from zooscope.autoencoder.artefact import TrainedAutoencoder
    from zooscope.zoo.store import Zoo

DIRECTIONS = ("random", "error")
# L2 norms of the perturbation, in the weights' own units: from far inside a good reconstruction's
# error (about 0.3 on the digits zoo at latent 64) to beyond the norm of the weights themselves.
DEFAULT_NORMS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
# The first-order prediction holds while ||measured - predicted|| <= this fraction of ||measured||.
LINEAR_TOLERANCE = 0.1
# float64 and a tangent beside every activation: a quarter of a population_forward call's budget.
SENSITIVITY_BUDGET = ACTIVATION_BUDGET // 4
BLOCK_MODELS = 64
_SUMS = ("squared_error", "squared_measured", "squared_predicted", "correct", "agree")


@dataclass
class SensitivityReport:
    norms: list[float]
    tolerance: float
    # Per direction, one row per norm: norm, accuracy, agreement (with the unperturbed original),
    # measured_change and predicted_change (the L2 norm of the change of the logits, root mean
    # square over models and inputs),
    # relative_error (||measured - predicted|| / ||measured||, pooled over every model) and
    # relative_error_median (the same per model, the median over models).
    directions: dict[str, list[dict[str, float | None]]]
    own_error: dict[str, float | None]  # the error direction at each model's own error norm
    breakdown: dict[str, float | None]  # per direction: breakdown_norm of its rows
    error_norm: dict[str, float | None]  # summary of ||reconstruction - original|| over the perturbed values
    weight_norm: dict[str, float | None]  # summary of ||original|| over the same values
    original_accuracy: dict[str, float | None]
    n_checkpoints: int
    n_inputs: int
    n_perturbed: int  # values perturbed per checkpoint
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SensitivityReport:
        return cls(**data)


def breakdown_norm(
    norms: Sequence[float], relative_errors: Sequence[float | None], tolerance: float = LINEAR_TOLERANCE
) -> float | None:
    """The smallest norm of an increasing grid from which the first-order prediction misses by more
    than `tolerance` at that norm and at every larger one; None when it holds at the largest norm.

    A miss at one norm followed by a hold at a larger one (a kink crossed and crossed back) does not
    count: the account stops holding where it no longer comes back. An unmeasured error (None)
    counts as a miss."""
    norms = check_norms(norms)
    if len(norms) != len(relative_errors):
        raise ValueError(f"{len(norms)} norms but {len(relative_errors)} relative errors")
    breakdown = None
    for norm, error in reversed(list(zip(norms, relative_errors, strict=True))):
        if error is not None and error <= tolerance:
            break
        breakdown = norm
    return breakdown


def check_norms(norms: Sequence[float]) -> list[float]:
    """The grid of norms as floats: refused unless it is positive and increasing."""
    grid = [float(norm) for norm in norms]
    if not grid or grid[0] <= 0 or any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise ValueError(f"norms must be positive and increase, got {grid}")
    return grid


def perturbed_values(arch: Architecture) -> torch.Tensor:
    """[P] bool over the flat layout: the weights and biases (BatchNorm running statistics stay)."""
    layout = FlatLayout.of(arch)
    buffers = {key for layer in arch.parameter_layers() for key in layer.buffer_keys}
    mask = torch.zeros(layout.size, dtype=torch.bool)
    for key in layout.keys:
        if key not in buffers:
            mask[layout.slice_of(key)] = True
    return mask


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    """Each row divided by its L2 norm; a zero row stays zero."""
    norms = vectors.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, vectors / norms.clamp_min(1e-300), torch.zeros_like(vectors))


def perturbation_sensitivity(
    arch: Architecture,
    originals: StackedParams,
    reconstructions: StackedParams,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norms: Sequence[float] = DEFAULT_NORMS,
    tolerance: float = LINEAR_TOLERANCE,
    seed: int = 0,
    activations: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
) -> SensitivityReport:
    """Perturb K originals along a random and along their reconstruction-error direction by each of
    `norms`; measure on inputs x [N, C, H, W] (labels y [N]) against the first-order prediction.

    `activations`: per-model activation codes where a zoo mixes them (CheckpointSet.activations)."""
    grid = check_norms(norms)
    layout = FlatLayout.of(arch)
    mask = perturbed_values(arch)
    flat = layout.flatten(originals).to(torch.float64)
    error = (layout.flatten(reconstructions).to(torch.float64) - flat) * mask
    generator = torch.Generator().manual_seed(seed)
    draw = torch.randn(flat.shape, generator=generator, dtype=torch.float64) * mask
    directions = {"random": _unit(draw), "error": _unit(error)}
    error_norms = error.norm(dim=1)
    k = flat.shape[0]
    # One set of per-model sums per direction and norm, and one for the error direction at each
    # model's own error norm ("own").
    keys = [(direction, i) for direction in DIRECTIONS for i in range(len(grid))] + [("error", "own")]
    sums = {key: {name: torch.zeros(k, dtype=torch.float64) for name in _SUMS} for key in keys}
    correct_original = torch.zeros(k, dtype=torch.float64)

    blocks: list[tuple[Architecture, torch.Tensor]] = []
    codes = None if activations is None else activations.cpu().long()
    for code in [None] if codes is None else sorted(set(codes.tolist())):
        members = torch.arange(k) if code is None else (codes == code).nonzero().squeeze(1)
        own = arch if code is None else arch.with_activation(ACTIVATION_NAMES[code])
        blocks += [(own, members[s]) for s in spans(len(members), BLOCK_MODELS)]
    x64, labels = x.to(device, torch.float64), y.to(device)
    done = 0
    for block_arch, index in blocks:
        theta = flat[index].to(device)
        step = inputs_per_call(block_arch, len(index), SENSITIVITY_BUDGET)
        for s in spans(x64.shape[0], step):
            logits = partial(_logits, block_arch, layout, x64[s])
            with torch.no_grad():
                for direction in DIRECTIONS:
                    unit = directions[direction][index].to(device)
                    base, tangent = jvp(logits, (theta,), (unit,))
                    if direction == DIRECTIONS[0]:
                        correct_original[index] += (base.argmax(-1) == labels[s]).sum(1).double().cpu()
                    scales = [
                        (i, torch.full((len(index),), norm, dtype=torch.float64, device=device))
                        for i, norm in enumerate(grid)
                    ]
                    if direction == "error":
                        scales.append(("own", error_norms[index].to(device)))
                    for i, scale in scales:
                        perturbed = logits(theta + scale[:, None] * unit)
                        predicted = scale[:, None, None] * tangent
                        _accumulate(sums[direction, i], index, base, perturbed, predicted, labels[s])
        done += len(index)
        report(progress, done / k, f"models {done}/{k}")

    n_inputs = int(x.shape[0])
    rows = {
        direction: [_row(grid[i], sums[direction, i], n_inputs) for i in range(len(grid))]
        for direction in DIRECTIONS
    }
    return SensitivityReport(
        norms=grid,
        tolerance=tolerance,
        directions=rows,
        own_error=_row(None, sums["error", "own"], n_inputs),
        breakdown={
            direction: breakdown_norm(grid, [row["relative_error"] for row in rows[direction]], tolerance)
            for direction in DIRECTIONS
        },
        error_norm=summarise(error_norms.tolist()),
        weight_norm=summarise((flat * mask).norm(dim=1).tolist()),
        original_accuracy=summarise((correct_original / n_inputs).tolist()),
        n_checkpoints=k,
        n_inputs=n_inputs,
        n_perturbed=int(mask.sum()),
        seed=seed,
    )


def _logits(arch: Architecture, layout: FlatLayout, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Logits [k, n, C] of flat weights [k, P] on shared inputs: what jvp differentiates."""
    return population_forward_vmap(arch, layout.unflatten(weights), x)


def _accumulate(
    sums: dict[str, torch.Tensor],
    index: torch.Tensor,
    base: torch.Tensor,
    perturbed: torch.Tensor,
    predicted: torch.Tensor,
    labels: torch.Tensor,
) -> None:
    """Add one block of models and inputs to the per-model sums (logits [k, n, C])."""
    measured = perturbed - base
    values = {
        "squared_error": (measured - predicted).pow(2).sum((1, 2)),
        "squared_measured": measured.pow(2).sum((1, 2)),
        "squared_predicted": predicted.pow(2).sum((1, 2)),
        "correct": (perturbed.argmax(-1) == labels).sum(1).double(),
        "agree": (perturbed.argmax(-1) == base.argmax(-1)).sum(1).double(),
    }
    for name, value in values.items():
        sums[name][index] += value.cpu()


def _relative(error: float, measured: float) -> float:
    if measured > 0:
        return math.sqrt(error / measured)
    return 0.0 if error == 0 else math.inf  # no change measured: exact if none was predicted either


def _row(norm: float | None, sums: dict[str, torch.Tensor], n_inputs: int) -> dict[str, float | None]:
    pairs = max(1, sums["correct"].shape[0] * n_inputs)  # (model, input) pairs
    measured, error = float(sums["squared_measured"].sum()), float(sums["squared_error"].sum())
    per_model = [
        _relative(float(e), float(m))
        for e, m in zip(sums["squared_error"], sums["squared_measured"], strict=True)
        if m > 0
    ]
    return {
        "norm": norm,
        "accuracy": float(sums["correct"].sum()) / pairs,
        "agreement": float(sums["agree"].sum()) / pairs,
        "measured_change": math.sqrt(measured / pairs),
        "predicted_change": math.sqrt(float(sums["squared_predicted"].sum()) / pairs),
        "relative_error": _relative(error, measured),
        "relative_error_median": statistics.median(per_model) if per_model else None,
    }


def analyse_sensitivity(
    ae: TrainedAutoencoder,
    zoo: Zoo,
    *,
    split: str = "test",
    n_inputs: int | None = None,
    max_checkpoints: int | None = None,
    norms: Sequence[float] = DEFAULT_NORMS,
    tolerance: float = LINEAR_TOLERANCE,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
) -> SensitivityReport:
    """perturbation_sensitivity on the checkpoints of one split of `zoo` (the first
    `max_checkpoints`) and their reconstructions by `ae`, on the first `n_inputs` test images."""
    records = zoo.checkpoints(split=split)[:max_checkpoints]
    if not records:
        raise ZooscopeError(f"the zoo has no checkpoints in split {split!r}")
    checkpoints = zoo.load_checkpoints(records)
    reconstructed, _ = reconstruct_with_tokens(ae, checkpoints.params)
    test = zoo.dataset().test
    return perturbation_sensitivity(
        ae.architecture,
        checkpoints.params,
        reconstructed,
        test.x[:n_inputs],
        test.y[:n_inputs],
        norms=norms,
        tolerance=tolerance,
        seed=seed,
        activations=checkpoints.activations,
        device=device,
        progress=progress,
    )
