"""Training the autoencoder on a zoo with the composite loss (docs/method.md §4, §6).

One step: take a batch of checkpoints, draw two random neuron permutations of each (the two
contrastive views; the second breaks the function under contrastive_views "random"), tokenize
them, encode and decode, and compare:
  - structure: reconstruction vs input tokens (both views),
  - contrast: the projections of the two views (NT-Xent),
  - behaviour: the reconstructed networks vs the originals on fresh queries, all models of the
    batch in one population_forward call (skipped while beta = 1).
The original weights are flattened onto the device once; permutations, tokens and queries are
computed on the fly. A resumable checkpoint (model, optimiser, loss normalisers, epoch, random
state) is written every `checkpoint_every` epochs; `training_log.jsonl` gets one line an epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from zooscope.autoencoder.artefact import TRAINING_LOG, TRAINING_STATE, TrainedAutoencoder
from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.layer_statistics import LayerStatisticsLoss
from zooscope.autoencoder.losses import BehaviouralLoss, CompositeLoss, ContrastiveLoss, StructuralLoss
from zooscope.autoencoder.model import WeightAutoencoder
from zooscope.autoencoder.normalisation import TokenNormaliser
from zooscope.errors import ArtefactError, ZooscopeError
from zooscope.heap import retained_heap
from zooscope.networks.architectures import Architecture
from zooscope.networks.datasets import ImageDataset, QuerySampler
from zooscope.networks.parameters import FlatLayout, StackedParams
from zooscope.population.batching import spans, take
from zooscope.population.forward import population_forward
from zooscope.progress import ProgressFn, report
from zooscope.weightspace.permutations import PermutationIndex, permute_flat
from zooscope.weightspace.tokens import TokenLayout

__all__ = ["TrainingConfig", "train_autoencoder", "train_on_checkpoints", "resolve_device"]

LogFn = Callable[[str], None]
# Models per block when validating: bounds memory of the validation forward.
VALIDATION_BLOCK = 256
# Below this mean spread (standard deviation across checkpoints, per latent number) the validation
# latents count as one point: the latent collapse of _latent_collapse_warning.
LATENT_COLLAPSE_SPREAD = 1e-6


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZooscopeError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def train_autoencoder(
    zoo: Any,
    ae_config: AutoencoderConfig,
    training_config: TrainingConfig,
    out_dir: str | Path,
    progress: ProgressFn | None = None,
    resume: bool = False,
    log: LogFn | None = None,
) -> TrainedAutoencoder:
    """Train on the zoo's train split, validate on its val split; write the artefact to `out_dir`.

    Uses the checkpoint epochs the zoo stores (or `training_config.zoo_epochs`). With `resume`,
    continues from `out_dir`'s last training checkpoint when there is one.
    """
    epochs = list(training_config.zoo_epochs) if training_config.zoo_epochs else None
    train_records = zoo.checkpoints(split="train", epochs=epochs)
    if len(train_records) < 2:
        raise ZooscopeError(f"the zoo has {len(train_records)} training checkpoints; at least 2 are needed")
    val_records = zoo.checkpoints(split="val", epochs=epochs)
    return train_on_checkpoints(
        zoo.load_checkpoints(train_records),
        zoo.load_checkpoints(val_records) if val_records else None,
        zoo.dataset(),
        ae_config,
        training_config,
        out_dir,
        progress=progress,
        resume=resume,
        log=log,
        zoo_info=describe_zoo(zoo),
    )


def describe_zoo(zoo: Any) -> dict[str, Any]:
    """Where the training data came from: the zoo's path and an identity hash of its manifest."""
    manifest = zoo.manifest
    if hasattr(manifest, "to_dict"):
        manifest = manifest.to_dict()
    text = json.dumps(manifest, sort_keys=True, default=str)
    info: dict[str, Any] = {"manifest_sha256": hashlib.sha256(text.encode()).hexdigest()}
    for attr in ("path", "root", "directory"):
        if getattr(zoo, attr, None) is not None:
            info["path"] = str(getattr(zoo, attr))
            break
    if isinstance(manifest, dict):
        for key in ("name", "id", "dataset", "created"):
            if key in manifest:
                info[key] = manifest[key]
    return info


# ---- the run -------------------------------------------------------------------------------------
class _Run:
    """Everything one training run holds: data on the device, model, losses, optimiser, RNG."""

    def __init__(
        self,
        train: Any,
        val: Any | None,
        dataset: ImageDataset,
        ae_config: AutoencoderConfig,
        tc: TrainingConfig,
    ) -> None:
        self.tc = tc
        self.device = resolve_device(tc.device)
        self.arch: Architecture = train.arch
        self.layout = TokenLayout.of(self.arch, width=tc.token_width, include_batchnorm=tc.include_batchnorm)
        self.flat_layout = FlatLayout.of(self.arch)
        self.permutations = PermutationIndex.of(self.arch)

        torch.manual_seed(tc.seed)  # model initialisation (and dropout, when the config has any)
        self.generator = torch.Generator().manual_seed(tc.seed)  # batch order, permutations, queries
        self.model = WeightAutoencoder(ae_config, self.layout.width, self.layout.n_tokens).to(self.device)
        self.positions = self.layout.positions.to(self.device)
        self.model.check_positions(self.positions)

        self.train_flat = self.flat_layout.flatten(train.params).to(self.device, torch.float32)
        # per-checkpoint activation codes where the zoo mixes activations (CheckpointSet.activations)
        self.train_activations: torch.Tensor | None = getattr(train, "activations", None)
        # Fitted on the training split only (permutations do not change a layer's statistics).
        self.normaliser = TokenNormaliser.fit(
            self.layout, self.layout.tokenize(train.params), kind=tc.token_normalisation
        )
        self.queries = QuerySampler(dataset, n=tc.n_queries, source=tc.query_source)
        self.structural = StructuralLoss(self.layout.mask, tc.structural_loss).to(self.device)
        self.behavioural = BehaviouralLoss(
            self.arch,
            self.layout,
            tc.behavioural_loss,
            tc.kl_temperature,
            to_real=self.normaliser.denormalise,
            relu_gradient_slope=tc.behavioural_relu_gradient_slope,
        )
        self.contrastive = ContrastiveLoss(tc.contrastive_temperature)
        self.composite = CompositeLoss(tc.gamma, tc.beta, tc.statistics_weight).to(self.device)
        # The optional fourth term's head trains with the model but is not saved with it.
        self.statistics: LayerStatisticsLoss | None = None
        trained = list(self.model.parameters())
        if tc.statistics_weight > 0:
            self.statistics = LayerStatisticsLoss(self.arch, ae_config.latent_dim, train.params).to(
                self.device
            )
            trained += list(self.statistics.parameters())
        # The fused kernel updates every tensor in one pass: on a 2-core CPU 1.4 ms a step for the
        # cpu-sized model's 122 tensors against 7-8 ms tensor by tensor (torch's CPU default), the
        # same update to float rounding.
        fused = True if self.device.type in ("cpu", "cuda") else None
        self.optimiser = torch.optim.AdamW(trained, lr=tc.lr, weight_decay=tc.weight_decay, fused=fused)

        self.use_amp = tc.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16
        self.scaler: torch.amp.GradScaler | None = None
        if self.use_amp and not torch.cuda.is_bf16_supported():
            self.amp_dtype = torch.float16  # fp16 needs loss scaling; bf16 has fp32's range
            self.scaler = torch.amp.GradScaler("cuda")

        self.validation = _Validation(self, val, dataset) if val is not None else None
        n = self.train_flat.shape[0]
        # A last batch of one checkpoint has no contrastive negatives: fold it into the others.
        self.steps_per_epoch = max(1, n // tc.batch_size + (1 if n % tc.batch_size >= 2 else 0))
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.step = 0
        self.epoch = 0

    # ---- schedules ----
    def lr_at(self, step: int) -> float:
        tc = self.tc
        if tc.lr_schedule == "none":
            return tc.lr
        t = min(step / max(1, self.total_steps), 1.0)
        return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    def beta_at(self, step: int) -> float:
        return self.tc.beta_at(step / self.steps_per_epoch)

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # ---- one step ----
    def batches(self) -> Iterator[torch.Tensor]:
        n = self.train_flat.shape[0]
        order = torch.randperm(n, generator=self.generator)
        bounds = list(spans(n, self.tc.batch_size))
        if len(bounds) > 1 and bounds[-1].stop - bounds[-1].start < 2:
            bounds[-2] = slice(bounds[-2].start, n)
            bounds.pop()
        for s in bounds:
            yield order[s].to(self.device)

    def view(self, flat: torch.Tensor, preserve_function: bool = True) -> tuple[StackedParams, torch.Tensor]:
        """A random neuron permutation of each checkpoint: (params, standardised tokens)."""
        index = self.permutations.random(
            flat.shape[0], self.generator, preserve_function=preserve_function
        ).to(self.device)
        params = self.flat_layout.unflatten(permute_flat(flat, index))
        return params, self.normaliser.normalise(self.layout.tokenize(params))

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        tc, model = self.tc, self.model
        beta = self.beta_at(self.step)
        lr = self.lr_at(self.step)
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        flat = self.train_flat[batch]
        k = flat.shape[0]
        two_views = tc.gamma > 0
        views = [self.view(flat)]
        if two_views:
            views.append(self.view(flat, preserve_function=tc.contrastive_views != "random"))
        tokens = torch.cat([tokens for _, tokens in views])
        # Decode the first view only unless asked: the contrastive loss needs both encodings, the
        # reconstruction losses learn as much from one random view as from two, for 3/4 of the cost.
        decoded = len(views) if tc.decode_both_views else 1
        with self.autocast():
            latents = model.encode_tokens(tokens, self.positions)
            reconstruction = model.decode(latents[: decoded * k], self.positions)
            structural = self.structural(reconstruction, tokens[: decoded * k])
            contrastive = None
            if two_views:
                z_a, z_b = model.project(latents).float().chunk(2)
                contrastive = self.contrastive(z_a, z_b)
            statistics = None
            if self.statistics is not None:  # a permutation keeps a layer's statistics: any view will do
                statistics = self.statistics(latents[:k].mean(1), self.flat_layout.unflatten(flat))
        behavioural = None
        # The loss's form may change at an epoch (TrainingConfig.later_behavioural_loss); a resumed
        # run finds the switch from the step count alone.
        kind = tc.behavioural_loss_at(self.step / self.steps_per_epoch)
        previous_kind = tc.behavioural_loss_at((self.step - 1) / self.steps_per_epoch) if self.step else kind
        self.behavioural.kind = kind
        if beta < 1.0:
            # Fresh queries every step, shared by every model; the originals run without gradient
            # once, and every decoded view compares against them (a permutation keeps the function).
            queries = self.queries.sample(self.generator).to(self.device)
            activations = None if self.train_activations is None else self.train_activations[batch.cpu()]
            targets = self.behavioural.targets(self.flat_layout.unflatten(flat), queries, activations)
            reference = {
                key: torch.cat([params[key] for params, _ in views[:decoded]]) for key in views[0][0]
            }
            behavioural = self.behavioural(
                reconstruction, targets, queries, reference=reference, activations=activations
            )
            if kind != previous_kind:
                self._carry_behavioural_normaliser(
                    previous_kind, behavioural, reconstruction, targets, queries, reference, activations
                )
        delta = self.tc.statistics_weight_at(self.step / self.steps_per_epoch)
        total = self.composite(
            contrastive, structural, behavioural, beta=beta, statistics=statistics, delta=delta
        )

        self.optimiser.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimiser)
        else:
            total.backward()
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimiser)
            self.scaler.update()
        else:
            self.optimiser.step()
        self.step += 1
        return {
            "loss": float(total.detach()),
            "structural": float(structural.detach()),
            "contrastive": math.nan if contrastive is None else float(contrastive.detach()),
            "behavioural": math.nan if behavioural is None else float(behavioural.detach()),
            "statistics": math.nan if statistics is None else float(statistics.detach()),
            "beta": beta,
            "delta": delta,
            "lr": lr,
        }

    def _carry_behavioural_normaliser(
        self,
        previous_kind: str,
        value: torch.Tensor,
        reconstruction: torch.Tensor,
        targets: torch.Tensor,
        queries: torch.Tensor,
        reference: StackedParams,
        activations: torch.Tensor | None,
    ) -> None:
        """At the switch of the behavioural loss's form, rescale its normaliser so that the term
        keeps its value on this batch: the form changes, not the term's weight. Normalised afresh
        by the new form's first value, a term that had come down tenfold would weigh tenfold at
        once, and the jump of its gradient threw the decoder off (docs/tuning.md, "A later form of
        the behavioural loss"). Costs one more forward of the batch, once."""
        kind, self.behavioural.kind = self.behavioural.kind, previous_kind
        try:
            with torch.no_grad():
                before_value = self.behavioural(
                    reconstruction.detach(), targets, queries, reference=reference, activations=activations
                )
            before = float(before_value)
        finally:
            self.behavioural.kind = kind
        after = float(value.detach())
        if math.isfinite(before) and math.isfinite(after) and before > 0 and after > 0:
            self.composite.rescale_normaliser("behavioural", after / before)
        else:  # nothing to carry over: the new form's first value sets it, as at the term's start
            self.composite.forget_normaliser("behavioural")

    # ---- checkpoints ----
    def state(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "composite": self.composite.state_dict(),
            "statistics": None if self.statistics is None else self.statistics.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "ae_config": self.model.config.to_dict(),
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_state(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)  # atomic: a crash mid-write never leaves a half checkpoint behind

    def load_state(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as error:  # a truncated or foreign file: say which and why
            raise ArtefactError(f"cannot read the training checkpoint {path}: {error}") from error
        saved = AutoencoderConfig.from_dict(state["ae_config"])
        if saved != self.model.config:
            raise ArtefactError(
                f"the training checkpoint in {path.parent} was made with a different autoencoder "
                f"config ({saved}); resume with the same preset or start a fresh run"
            )
        if (self.statistics is None) != (state.get("statistics") is None):
            raise ArtefactError(
                f"the training checkpoint in {path.parent} was made "
                f"{'without' if self.statistics is not None else 'with'} the layer-statistics term; "
                "resume with the same recipe or start a fresh run"
            )
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        # A checkpoint from before the fourth term has no normaliser for it: keep ours (not yet set).
        self.composite.load_state_dict({**self.composite.state_dict(), **state["composite"]})
        if self.statistics is not None:
            self.statistics.load_state_dict(state["statistics"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)


class _Validation:
    """Agreement of reconstructions with originals on the val checkpoints and val inputs.

    The originals' predictions are computed once; each validation reconstructs every val
    checkpoint (unpermuted) and runs them in blocks of models, one population_forward a block.
    """

    def __init__(self, run: _Run, val: Any, dataset: ImageDataset) -> None:
        self.run = run
        tc = run.tc
        self.params = {k: v.to(run.device, torch.float32) for k, v in val.params.items()}
        self.activations: torch.Tensor | None = getattr(val, "activations", None)
        self.tokens = run.normaliser.normalise(run.layout.tokenize(self.params))
        self.inputs = dataset.val.x[: tc.val_inputs].to(run.device)
        self.labels = dataset.val.y[: tc.val_inputs].to(run.device)
        with torch.no_grad():
            self.original_predictions = torch.cat(
                [
                    population_forward(
                        run.arch, take(self.params, s), self.inputs, activations=self._activations(s)
                    ).argmax(-1)
                    for s in spans(self.tokens.shape[0], VALIDATION_BLOCK)
                ]
            )

    def _activations(self, s: slice) -> torch.Tensor | None:
        return None if self.activations is None else self.activations[s]

    def _constant(self, predictions: torch.Tensor) -> torch.Tensor:
        """[K] bool: the model gives one class for at least constant_class_fraction of inputs."""
        counts = torch.nn.functional.one_hot(predictions, self.run.arch.n_classes).sum(dim=1)
        return counts.amax(dim=1) >= self.run.tc.constant_class_fraction * predictions.shape[1]

    @torch.no_grad()
    def __call__(self) -> dict[str, Any]:
        run = self.run
        run.model.eval()
        structural, predictions, latents = [], [], []
        for s in spans(self.tokens.shape[0], VALIDATION_BLOCK):
            tokens = self.tokens[s]
            with run.autocast():
                reconstruction, latent, _ = run.model(tokens, run.positions)
            reconstruction = reconstruction.float()
            latents.append(latent.float().flatten(1))
            structural.append(run.structural.per_model(reconstruction, tokens))
            real = run.normaliser.denormalise(reconstruction)
            params = run.layout.detokenize(real, reference=take(self.params, s))
            predictions.append(
                population_forward(run.arch, params, self.inputs, activations=self._activations(s)).argmax(-1)
            )
        run.model.train()
        recon = torch.cat(predictions)
        original = self.original_predictions
        agreement = (recon == original).float().mean(dim=1)
        constant_r = self._constant(recon).float().mean()
        constant_o = self._constant(original).float().mean()
        tc = run.tc
        # The spread of the validation latents across checkpoints: 0 when every checkpoint encodes
        # to the same latent (a ReLU latent whose units all died), a collapse no loss term reports.
        latent_spread = float(torch.cat(latents).std(dim=0).mean()) if len(self.tokens) > 1 else None
        return {
            "val_structural": float(torch.cat(structural).mean()),
            "val_latent_spread": latent_spread,
            "latent_collapse": latent_spread is not None and latent_spread < LATENT_COLLAPSE_SPREAD,
            "val_agreement": float(agreement.mean()),
            "val_reconstructed_accuracy": float((recon == self.labels).float().mean()),
            "val_original_accuracy": float((original == self.labels).float().mean()),
            "val_constant_fraction": float(constant_r),
            "val_original_constant_fraction": float(constant_o),
            "collapse": bool(constant_r >= tc.collapse_threshold and constant_r > constant_o),
        }


def train_on_checkpoints(
    train: Any,
    val: Any | None,
    dataset: ImageDataset,
    ae_config: AutoencoderConfig,
    training_config: TrainingConfig,
    out_dir: str | Path,
    *,
    progress: ProgressFn | None = None,
    resume: bool = False,
    log: LogFn | None = None,
    zoo_info: dict[str, Any] | None = None,
) -> TrainedAutoencoder:
    """The training loop on checkpoint sets (objects with .arch and .params, like zoo.store.CheckpointSet).

    `dataset` gives the query inputs and the validation inputs. Writes the artefact to `out_dir`.
    """
    tc = training_config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: None)
    run = _Run(train, val, dataset, ae_config, tc)
    state_path, log_path = out / TRAINING_STATE, out / TRAINING_LOG

    history: list[dict[str, Any]] = []
    if resume and state_path.exists():
        run.load_state(state_path)
        history = [e for e in TrainedAutoencoder.read_log(out) if e.get("epoch", 0) <= run.epoch]
        say(f"resumed from epoch {run.epoch} ({state_path})")
    elif resume:
        say(f"nothing to resume in {out}: starting a fresh run")
    log_path.write_text("".join(json.dumps(e) + "\n" for e in history))

    device_note = f"{run.device}" + (f", amp {run.amp_dtype}" if run.use_amp else "")
    say(
        f"training {run.model.n_parameters:,}-parameter autoencoder on {run.train_flat.shape[0]} "
        f"checkpoints ({run.layout.n_tokens} tokens x {run.layout.width}), "
        f"{run.steps_per_epoch} steps/epoch, {device_note}"
    )
    run.model.train()
    while run.epoch < tc.epochs:
        # A behavioural step allocates and frees the same large activations every step (the first
        # convolution's pool slabs on CNN-s: 33 MB a chunk, forward and gradient): kept in the
        # heap, their pages stay mapped instead of faulting in again each step (zooscope/heap.py).
        with retained_heap():
            entry = _train_epoch(run, progress)
        last = run.epoch == tc.epochs
        if run.validation is not None and (run.epoch % tc.validate_every == 0 or last):
            started = time.perf_counter()
            entry.update(run.validation())
            entry["seconds_validation"] = round(time.perf_counter() - started, 3)
        history.append(entry)
        with log_path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        say(_epoch_line(entry, tc.epochs))
        if entry.get("collapse"):
            say(_collapse_warning(entry))
        if entry.get("latent_collapse"):
            say(_latent_collapse_warning(entry))
        if last or (tc.checkpoint_every > 0 and run.epoch % tc.checkpoint_every == 0):
            run.save_state(state_path)

    run.model.eval()
    trained = TrainedAutoencoder(
        run.model,
        ae_config,
        run.arch,
        run.layout,
        training_config=tc,
        zoo=zoo_info,
        training_log=history,
        device=run.device,
        normaliser=run.normaliser,
    )
    trained.save(out)
    report(progress, 1.0, "trained")
    return trained


def _train_epoch(run: _Run, progress: ProgressFn | None) -> dict[str, Any]:
    tc = run.tc
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    started = time.perf_counter()
    steps = 0
    for batch in run.batches():
        values = run.train_step(batch)
        for key, value in values.items():
            if not math.isnan(value):
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
        steps += 1
        done = run.epoch + steps / run.steps_per_epoch
        report(progress, done / tc.epochs, f"epoch {run.epoch + 1}/{tc.epochs} loss {values['loss']:.4f}")
    seconds = time.perf_counter() - started
    run.epoch += 1
    entry: dict[str, Any] = {"epoch": run.epoch, "step": run.step}
    for key in ("loss", "contrastive", "structural", "behavioural", "statistics", "beta", "delta", "lr"):
        entry[key] = sums[key] / counts[key] if key in counts else None
    entry["behavioural_loss"] = run.behavioural.kind  # its form at the epoch's end
    entry["normalisers"] = run.composite.normalisers()
    entry["seconds"] = round(seconds, 3)
    entry["seconds_per_step"] = round(seconds / max(1, steps), 4)
    return entry


def _collapse_warning(entry: dict[str, Any]) -> str:
    found = (
        f"WARNING: COLLAPSE at epoch {entry['epoch']}: {entry['val_constant_fraction']:.0%} of the "
        "validation reconstructions predict a single class (originals: "
        f"{entry['val_original_constant_fraction']:.0%})."
    )
    if entry.get("beta", 0.0) >= 1.0:
        # No behavioural term this epoch: the cause is lossy structure, not the behavioural loss.
        return (
            f"{found} The loss has no behavioural term at this epoch (beta 1: structure only, or "
            "the structure-first warm-up), and the rebuilt weights have lost their function; the "
            "behavioural term is what keeps it (docs/method.md §11)."
        )
    return (
        f"{found} The behavioural loss fell into the constant-class solution (docs/method.md §11): "
        "use a longer structure-first warm-up (--warmup-epochs), a lower learning rate or a larger model."
    )


def _latent_collapse_warning(entry: dict[str, Any]) -> str:
    return (
        f"WARNING: LATENT COLLAPSE at epoch {entry['epoch']}: every validation checkpoint encodes to "
        f"the same latent (spread {entry['val_latent_spread']:.2e} across checkpoints), so the decoder "
        "rebuilds one model for all of them. With a ReLU latent its units have died: use a linear "
        "or softplus latent (latent_activation), or a lower learning rate."
    )


def _epoch_line(entry: dict[str, Any], epochs: int) -> str:
    def fmt(key: str, spec: str = ".4f") -> str:
        value = entry.get(key)
        return "-" if value is None else format(value, spec)

    line = (
        f"epoch {entry['epoch']}/{epochs} loss {fmt('loss')} C {fmt('contrastive')} "
        f"S {fmt('structural', '.3g')} B {fmt('behavioural', '.3g')} beta {fmt('beta', '.3f')} "
    )
    if entry.get("statistics") is not None:
        line += f"T {fmt('statistics', '.3g')} "
    line += f"{entry['seconds']:.1f}s"
    if "val_agreement" in entry:
        line += (
            f" | val agreement {entry['val_agreement']:.1%} "
            f"recon acc {entry['val_reconstructed_accuracy']:.1%} "
            f"(orig {entry['val_original_accuracy']:.1%})"
        )
    return line
