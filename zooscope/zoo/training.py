"""Train every model of a zoo at once.

All K models live in one flat tensor [K, P]; one `population_forward(..., train=True)` call runs
them on their own mini-batches [K, B, C, H, W], one backward gives every model its gradient, and
a batched Adam (per-model learning rate and weight decay, the update torch.optim.Adam makes)
steps them all. There is no Python loop over models in the training math.

Each model's init and data order come from its own generator, seeded by (zoo seed, model
index): the same model trained alone by `train_one_at_a_time` sees the same init and batches.
A model whose loss or weights turn non-finite, or whose largest weight passes the divergence
threshold, is flagged and frozen at its last healthy weights: it stays in the zoo (its poor
accuracy is information), but cannot spread NaN into metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from zooscope.errors import ArchitectureMismatchError
from zooscope.heap import retained_heap
from zooscope.networks.architectures import Architecture, initialise
from zooscope.networks.parameters import FlatLayout, StackedParams, n_models
from zooscope.population.batching import widest_activation
from zooscope.population.forward import population_forward
from zooscope.progress import ProgressFn, report
from zooscope.zoo.grid import ModelSpec, ZooConfig, ZooConfigError

if TYPE_CHECKING:
    from zooscope.networks.datasets import ImageDataset

# Per model and epoch. Validation and test metrics evaluate the model after the epoch on the
# whole split. Training metrics after epoch e >= 1 are the means over that epoch's mini-batches
# (train mode, weights moving), as the public Model Zoos record them; at epoch 0 they evaluate
# the untrained model on the whole training split.
METRIC_NAMES = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
SPLIT_NAMES = ("train", "val", "test")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, so the two training paths agree
ADAM_EPS = 1e-8
# Evaluating every model on a whole split at once would hold K x N activations; this caps the
# activation memory of one evaluation call (models are then run a chunk at a time).
EVAL_MEMORY_BUDGET_BYTES = 256 * 2**20


@dataclass
class TrainedModels:
    """The outcome of training a zoo: kept weights, per-epoch metrics and divergence flags."""

    config: ZooConfig
    specs: list[ModelSpec]
    # epoch -> {key: [K, *shape]}, for each of config.checkpoint_epochs
    checkpoints: dict[int, StackedParams]
    # name -> [K, epochs + 1]; column e is after e epochs (column 0: the untrained model)
    metrics: dict[str, torch.Tensor]
    diverged_epoch: list[int | None]
    diverged_reason: list[str | None]
    wall_seconds: float = 0.0
    steps_per_epoch: int = 0

    @property
    def diverged(self) -> torch.Tensor:
        return torch.tensor([e is not None for e in self.diverged_epoch])

    @property
    def n_models(self) -> int:
        return len(self.specs)


def train_models(
    config: ZooConfig,
    dataset: ImageDataset,
    progress: ProgressFn | None = None,
    *,
    device: str | torch.device = "cpu",
    specs: Sequence[ModelSpec] | None = None,
) -> TrainedModels:
    """Train the models of `config` (or the given subset `specs`) together; see the module doc."""
    started = time.perf_counter()
    arch = _check_architecture(config, dataset)
    specs = list(specs) if specs is not None else config.model_specs()
    device = torch.device(device)
    layout = FlatLayout.of(arch)
    k = len(specs)

    generators = [torch.Generator().manual_seed(s.seed) for s in specs]
    init_generators = [init_generator(s, g) for s, g in zip(specs, generators, strict=True)]
    flat = initial_weights(arch, layout, specs, init_generators).to(device)
    x_train, y_train = dataset.train.x.to(device), dataset.train.y.to(device)
    steps = _steps_per_epoch(len(y_train), config.batch_size)

    lr = torch.tensor([s.lr for s in specs], device=device)
    wd = torch.tensor([s.wd for s in specs], device=device)
    optimiser = BatchedAdam(flat, lr, wd)
    active = torch.ones(k, dtype=torch.bool, device=device)
    diverged_epoch: list[int | None] = [None] * k
    diverged_reason: list[str | None] = [None] * k

    def flag(bad: torch.Tensor, epoch: int, reason: str) -> None:
        for i in torch.nonzero(bad & active).flatten().tolist():
            diverged_epoch[i], diverged_reason[i] = epoch, reason

    metrics = {name: torch.full((k, config.epochs + 1), math.nan) for name in METRIC_NAMES}
    checkpoints: dict[int, StackedParams] = {}

    def record(epoch: int) -> None:
        # The training split is evaluated in full only before training; afterwards its metrics
        # are the epoch's running means (see METRIC_NAMES), which cost nothing extra.
        splits = SPLIT_NAMES if epoch == 0 else ("val", "test")
        params = layout.unflatten(flat)
        for name, value in evaluate_models(arch, params, dataset, config.eval_batch_size, splits).items():
            metrics[name][:, epoch] = value.cpu()
        if epoch in config.checkpoint_epochs:
            checkpoints[epoch] = {key: v.detach().cpu().clone() for key, v in params.items()}

    # Dropout masks come from the global generator: fork it so the build is reproducible
    # without changing the caller's random state. Each step frees and reallocates the same large
    # tensors: retained_heap keeps their pages mapped between steps.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), retained_heap():
        torch.manual_seed(config.seed)
        record(0)
        for epoch in range(1, config.epochs + 1):
            order = torch.stack([torch.randperm(len(y_train), generator=g) for g in generators]).to(device)
            loss_sum = torch.zeros(k, device=device)
            correct = torch.zeros(k, device=device)
            for step in range(steps):
                batch = order[:, step * config.batch_size : (step + 1) * config.batch_size]  # [K, B]
                targets = y_train[batch]
                weights = flat.detach().requires_grad_(True)
                logits = population_forward(arch, layout.unflatten(weights), x_train[batch], train=True)
                losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
                losses = losses.view(k, -1).mean(dim=1)
                loss_sum += losses.detach()
                correct += (logits.detach().argmax(dim=2) == targets).sum(dim=1)
                flag(~torch.isfinite(losses), epoch, "non-finite loss")
                active &= torch.isfinite(losses)
                # where(), not a product: 0 * NaN would still poison the backward pass
                total = torch.where(active, losses, torch.zeros_like(losses)).sum()
                (grad,) = torch.autograd.grad(total, weights)
                proposed = optimiser.step(flat, grad)
                finite = torch.isfinite(proposed).all(dim=1)
                too_large = proposed.abs().amax(dim=1) > config.divergence_threshold
                flag(~finite, epoch, "non-finite weights")
                flag(finite & too_large, epoch, f"max |w| above {config.divergence_threshold:g}")
                active &= finite & ~too_large
                # frozen models keep their last healthy weights
                flat = torch.where(active[:, None], proposed, flat)
            metrics["train_loss"][:, epoch] = (loss_sum / steps).cpu()
            metrics["train_acc"][:, epoch] = (correct / (steps * config.batch_size)).cpu()
            record(epoch)
            report(progress, epoch / config.epochs, f"epoch {epoch}/{config.epochs}, {k} models")

    return TrainedModels(
        config=config,
        specs=specs,
        checkpoints=checkpoints,
        metrics=metrics,
        diverged_epoch=diverged_epoch,
        diverged_reason=diverged_reason,
        wall_seconds=time.perf_counter() - started,
        steps_per_epoch=steps,
    )


class BatchedAdam:
    """torch.optim.Adam (L2 weight decay added to the gradient) on stacked weights [K, P].

    Each model has its own learning rate and weight decay; the moments are [K, P] tensors and the
    step counter is shared, since every model steps together.
    """

    def __init__(self, flat: torch.Tensor, lr: torch.Tensor, weight_decay: torch.Tensor) -> None:
        self.lr = lr[:, None]
        self.weight_decay = weight_decay[:, None]
        self.exp_avg = torch.zeros_like(flat)
        self.exp_avg_sq = torch.zeros_like(flat)
        self.step_count = 0

    @torch.no_grad()
    def step(self, flat: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The weights after one step (a new tensor; `flat` is left as it was)."""
        beta1, beta2 = ADAM_BETAS
        self.step_count += 1
        grad = grad + self.weight_decay * flat
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.step_count)
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
        return flat - (self.lr / bias_correction1) * self.exp_avg / denom


@torch.no_grad()
def evaluate_models(
    arch: Architecture,
    params: StackedParams,
    dataset: ImageDataset,
    batch_size: int,
    splits: Sequence[str] = SPLIT_NAMES,
) -> dict[str, torch.Tensor]:
    """Mean cross-entropy and accuracy of every model on each split: {"val_loss": [K], ...}."""
    out: dict[str, torch.Tensor] = {}
    k = n_models(params)
    chunk = models_per_chunk(arch, batch_size)
    for split_name in splits:
        split = getattr(dataset, split_name)
        n = len(split.y)
        loss_sum = torch.zeros(k, dtype=torch.float64)
        correct = torch.zeros(k, dtype=torch.float64)
        device = next(iter(params.values())).device
        for start in range(0, n, batch_size):
            x = split.x[start : start + batch_size].to(device)
            y = split.y[start : start + batch_size].to(device)
            logits = population_forward(arch, params, x, chunk_size=chunk if chunk < k else None)
            losses = F.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none").view(k, -1)
            loss_sum += losses.sum(dim=1).double().cpu()
            correct += (logits.argmax(dim=2) == y).sum(dim=1).double().cpu()
        out[f"{split_name}_loss"] = (loss_sum / max(n, 1)).float() if n else torch.full((k,), math.nan)
        out[f"{split_name}_acc"] = (correct / max(n, 1)).float() if n else torch.full((k,), math.nan)
    return out


def models_per_chunk(arch: Architecture, batch_size: int) -> int:
    """How many models one evaluation call may run on `batch_size` inputs within the memory budget."""
    per_sample = widest_activation(arch) * 4  # float32 bytes
    return max(1, EVAL_MEMORY_BUDGET_BYTES // (per_sample * batch_size * 2))


def train_one_at_a_time(
    config: ZooConfig,
    dataset: ImageDataset,
    progress: ProgressFn | None = None,
    *,
    specs: Sequence[ModelSpec] | None = None,
) -> TrainedModels:
    """The reference path: each model an nn.Module trained by torch.optim.Adam, one after another.

    Same init, same data order and same divergence rule as `train_models`; slow. It exists to
    check the batched path (parity test) and to measure what batching buys (benchmark).
    """
    started = time.perf_counter()
    arch = _check_architecture(config, dataset)
    specs = list(specs) if specs is not None else config.model_specs()
    layout = FlatLayout.of(arch)
    k = len(specs)
    x_train, y_train = dataset.train.x, dataset.train.y
    steps = _steps_per_epoch(len(y_train), config.batch_size)
    metrics = {name: torch.full((k, config.epochs + 1), math.nan) for name in METRIC_NAMES}
    kept: dict[int, list[dict[str, torch.Tensor]]] = {e: [] for e in config.checkpoint_epochs}
    diverged_epoch: list[int | None] = [None] * k
    diverged_reason: list[str | None] = [None] * k

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for i, spec in enumerate(specs):
            generator = torch.Generator().manual_seed(spec.seed)
            module = arch.build()
            initialise(module, spec.init, init_generator(spec, generator))
            optimiser = torch.optim.Adam(module.parameters(), lr=spec.lr, weight_decay=spec.wd)

            def record(epoch: int, i: int = i, module: nn.Module = module) -> None:
                splits = SPLIT_NAMES if epoch == 0 else ("val", "test")
                for name, value in _evaluate_module(module, dataset, config.eval_batch_size, splits).items():
                    metrics[name][i, epoch] = value
                if epoch in kept:
                    kept[epoch].append({key: v.detach().clone() for key, v in module.state_dict().items()})

            record(0)
            for epoch in range(1, config.epochs + 1):
                order = torch.randperm(len(y_train), generator=generator)
                if diverged_epoch[i] is None:
                    reason, running = _train_module_epoch(
                        module, optimiser, x_train, y_train, order, config, steps
                    )
                    if reason is not None:
                        diverged_epoch[i], diverged_reason[i] = epoch, reason
                else:  # frozen: the batched path still runs it on the epoch's batches
                    running = _running_metrics(module, x_train, y_train, order, config, steps)
                metrics["train_loss"][i, epoch], metrics["train_acc"][i, epoch] = running
                record(epoch)
            report(progress, (i + 1) / k, f"model {i + 1}/{k}")

    checkpoints = {
        epoch: {key: torch.stack([sd[key] for sd in sds]) for key in layout.keys}
        for epoch, sds in kept.items()
    }
    return TrainedModels(
        config=config,
        specs=specs,
        checkpoints=checkpoints,
        metrics=metrics,
        diverged_epoch=diverged_epoch,
        diverged_reason=diverged_reason,
        wall_seconds=time.perf_counter() - started,
        steps_per_epoch=steps,
    )


def _train_module_epoch(
    module: nn.Module,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    config: ZooConfig,
    steps: int,
) -> tuple[str | None, tuple[float, float]]:
    """One epoch: (divergence reason or None, (running loss, running accuracy)).

    On divergence the weights go back to before the offending step and training stops, as in
    the batched path, whose frozen models still run on the rest of the epoch's batches.
    """
    module.train()
    loss_sum, correct = 0.0, 0
    for step in range(steps):
        batch = order[step * config.batch_size : (step + 1) * config.batch_size]
        before = [p.detach().clone() for p in module.parameters()]
        optimiser.zero_grad(set_to_none=True)
        logits = module(x[batch])
        loss = F.cross_entropy(logits, y[batch])
        loss_sum += loss.item()
        correct += int((logits.argmax(dim=1) == y[batch]).sum())
        reason = None if torch.isfinite(loss) else "non-finite loss"
        if reason is None:
            loss.backward()
            optimiser.step()
            reason = _divergence(module, config.divergence_threshold)
        if reason is not None:
            with torch.no_grad():
                for p, old in zip(module.parameters(), before, strict=True):
                    p.copy_(old)
            rest_loss, rest_correct = _running_sums(
                module, x, y, order[(step + 1) * config.batch_size :], config
            )
            return reason, (
                (loss_sum + rest_loss) / steps,
                (correct + rest_correct) / (steps * config.batch_size),
            )
    return None, (loss_sum / steps, correct / (steps * config.batch_size))


def _running_metrics(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, config: ZooConfig, steps: int
) -> tuple[float, float]:
    loss_sum, correct = _running_sums(module, x, y, order[: steps * config.batch_size], config)
    return loss_sum / steps, correct / (steps * config.batch_size)


@torch.no_grad()
def _running_sums(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, config: ZooConfig
) -> tuple[float, int]:
    """Loss and correct-count sums of a frozen model over the full batches left in `order`."""
    module.train()
    loss_sum, correct = 0.0, 0
    for step in range(len(order) // config.batch_size):
        batch = order[step * config.batch_size : (step + 1) * config.batch_size]
        logits = module(x[batch])
        loss_sum += F.cross_entropy(logits, y[batch]).item()
        correct += int((logits.argmax(dim=1) == y[batch]).sum())
    return loss_sum, correct


def _divergence(module: nn.Module, threshold: float) -> str | None:
    """The same rule as train_models: the reason a model diverged, or None."""
    weights = torch.cat([p.detach().flatten() for p in module.parameters()])
    if not torch.isfinite(weights).all():
        return "non-finite weights"
    if weights.abs().max() > threshold:
        return f"max |w| above {threshold:g}"
    return None


@torch.no_grad()
def _evaluate_module(
    module: nn.Module, dataset: ImageDataset, batch_size: int, splits: Sequence[str]
) -> dict[str, float]:
    module.eval()
    out: dict[str, float] = {}
    for split_name in splits:
        split = getattr(dataset, split_name)
        n = len(split.y)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, batch_size):
            logits = module(split.x[start : start + batch_size])
            y = split.y[start : start + batch_size]
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == y).sum())
        out[f"{split_name}_loss"] = loss_sum / n if n else math.nan
        out[f"{split_name}_acc"] = correct / n if n else math.nan
    return out


def init_generator(spec: ModelSpec, own: torch.Generator) -> torch.Generator:
    """Where a model's init is drawn from: its own generator (which then orders its data), or a
    fresh one on the shared init's seed (ModelSpec.init_seed)."""
    return own if spec.init_seed is None else torch.Generator().manual_seed(spec.init_seed)


def initial_weights(
    arch: Architecture, layout: FlatLayout, specs: Sequence[Any], generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """[K, P] initial weights; model i drawn from generators[i] exactly as train_one_at_a_time draws it.
    Only each spec's `init` is read, so a zoo's ModelRecords redraw its models' inits too."""
    rows = []
    for spec, generator in zip(specs, generators, strict=True):
        # a fresh module per model: initialise() draws from `generator` only, so this matches
        # the reference path, which builds one module per model too
        module = arch.build()
        initialise(module, spec.init, generator)
        state = module.state_dict()
        rows.append(torch.cat([state[key].flatten() for key in layout.keys]))
    return torch.stack(rows)


def _steps_per_epoch(n_train: int, batch_size: int) -> int:
    # Every model must see a full batch at every step, so the last partial batch is dropped
    # (a different few samples each epoch, since the order is reshuffled).
    steps = n_train // batch_size
    if steps == 0:
        raise ZooConfigError(f"batch size {batch_size} is larger than the training split ({n_train} samples)")
    return steps


def _check_architecture(config: ZooConfig, dataset: ImageDataset) -> Architecture:
    arch = config.architecture
    try:
        arch.parameter_layers()
    except RuntimeError as error:  # the convolutions shrink the image below one pixel
        raise ArchitectureMismatchError(
            f"{arch.name}: inputs of {arch.image_size} pixels are too small for the {arch.family} family; "
            "use --resize or another family"
        ) from error
    if tuple(dataset.input_shape) != arch.input_shape:
        raise ArchitectureMismatchError(
            f"{arch.name} takes inputs {list(arch.input_shape)} but data set {config.dataset!r} "
            f"gives {list(dataset.input_shape)}; choose a matching architecture or --resize"
        )
    if dataset.n_classes != arch.n_classes:
        raise ArchitectureMismatchError(
            f"{arch.name} has {arch.n_classes} outputs but data set {config.dataset!r} "
            f"has {dataset.n_classes} classes"
        )
    return arch
