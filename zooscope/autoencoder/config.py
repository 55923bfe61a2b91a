"""Configuration of the weight-space autoencoder (its size) and of its training (the recipe).

Both are frozen dataclasses with `to_dict()` / `from_dict()` so every artefact can record them.
Numbers without a source comment are our own choices; the paper's settings are in method.md §3, §6.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a dataclass from a dict, ignoring unknown keys (older or newer artefacts) and turning
    JSON lists back into the tuples the dataclass declares."""
    known = {f.name for f in fields(cls)}
    values = {}
    for key, value in data.items():
        if key in known:
            values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


CONTRAST_INPUTS = ("flatten", "mean")
LATENT_ACTIVATIONS = ("none", "relu", "softplus")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Size of the SANE-style transformer autoencoder (method.md §3)."""

    d_model: int = 128
    n_heads: int = 4
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    d_ff: int = 256  # the sizes' defaults are the cpu preset's (which also widens the latent)
    # Per token; a checkpoint is T x latent_dim numbers. The field defaults stay those of the first
    # cpu preset, so an artefact recorded before a field existed reads back as what it ran with.
    latent_dim: int = 32
    dropout: float = 0.0  # the zoos are small and the views already augment; 0 keeps runs reproducible
    projection_dim: int = 30  # output of the contrastive projection head (method.md §3)
    # What the contrastive head reads: "flatten" = the whole latent sequence [T*L] (method.md §3);
    # "mean" = the mean-pooled embedding [L], the vector property prediction reads, so the
    # contrastive loss shapes that vector directly (docs/tuning.md, "Property prediction").
    contrast_on: str = "flatten"
    # A nonlinearity on the per-token latent: "none" (method.md), "relu" or "softplus". A linear
    # code averaged over tokens keeps the mean of the weights and loses their spread; a
    # non-negative code must split signs over units, and its mean keeps magnitudes
    # (docs/tuning.md, "Property prediction").
    latent_activation: str = "none"
    # The pre-norm encoder's closing LayerNorm before the latent map. It rescales every token to
    # unit spread, so a token's magnitude reaches the latent only through nonlinear cues; without
    # it, the residual stream (magnitudes included) meets the linear latent map directly
    # (docs/tuning.md, "Property prediction").
    encoder_final_norm: bool = True
    # Sizes of the learned position tables: global token index, layer index, channel index (paper).
    max_positions: tuple[int, int, int] = (500, 50, 100)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.d_model % 2:
            raise ValueError("d_model must be even: the position embedding uses two halves of it")
        if self.contrast_on not in CONTRAST_INPUTS:
            raise ValueError(
                f"contrast_on must be one of {', '.join(CONTRAST_INPUTS)}, not {self.contrast_on!r}"
            )
        if self.latent_activation not in LATENT_ACTIVATIONS:
            raise ValueError(
                f"latent_activation must be one of {', '.join(LATENT_ACTIVATIONS)}, "
                f"not {self.latent_activation!r}"
            )
        if len(self.max_positions) != 3:
            raise ValueError("max_positions needs three sizes: global, layer, channel")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        return _from_dict(cls, data)

    # ---- presets --------------------------------------------------------------------------------
    @classmethod
    def paper(cls) -> AutoencoderConfig:
        """The paper's GPU size: about 21.5 M parameters at CNN3's token width (289)."""
        return cls(d_model=256, n_heads=8, n_encoder_layers=8, n_decoder_layers=8, d_ff=2048, latent_dim=64)

    @classmethod
    def cpu(cls) -> AutoencoderConfig:
        """The CPU default: trains the default digits zoo (C+S+B) on a 2-core machine in minutes.

        d_ff is 2 x d_model rather than the usual 4x: on a CPU the feed-forward matmuls are most of
        the step, and halving them costs little reconstruction quality at this token count (~42).
        A ReLU latent of 64 per token (session 7; the first preset: linear, 32): the mean-pooled
        embedding then keeps each layer's magnitudes, biases included. With the layer-statistics
        term, R^2 for test accuracy went from 0.87 to 0.92, at higher agreement (docs/tuning.md,
        "The cpu preset of session 7").
        """
        return cls(
            d_model=128,
            n_heads=4,
            n_encoder_layers=4,
            n_decoder_layers=4,
            d_ff=256,
            latent_dim=64,
            latent_activation="relu",
        )

    @classmethod
    def tiny(cls) -> AutoencoderConfig:
        """For tests: a few thousand parameters, a step takes milliseconds."""
        return cls(d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, latent_dim=4)

    @classmethod
    def preset(cls, name: str) -> AutoencoderConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown autoencoder preset {name!r}; known: {', '.join(PRESETS)}")
        return getattr(cls, name)()


PRESETS = ("cpu", "paper", "tiny")

BehaviouralKind = Literal["mse", "mse_scaled", "logits", "kl"]
BEHAVIOURAL_KINDS = ("mse", "mse_scaled", "logits", "kl")
LRSchedule = Literal["none", "cosine"]
TokenNormalisation = Literal["none", "layer", "tensor"]
TOKEN_NORMALISATIONS = ("none", "layer", "tensor")  # normalisation.py's kinds


@dataclass(frozen=True)
class TrainingConfig:
    """The training recipe: L = gamma*L_C + (1-gamma)*(beta*L_S + (1-beta)*L_B) (method.md §4, §6)."""

    # ---- loss weights ----
    gamma: float = 0.05  # weight of the contrastive term (paper)
    beta: float = 0.1  # weight of STRUCTURE in the rest: 1 = structure-only baseline, 0 = behaviour-only
    # Structure-first warm-up: beta moves linearly from 1 to `beta` over this many epochs. Short CPU
    # runs otherwise fall into the one-constant-class solution (method.md §11). 0 disables it.
    beta_warmup_epochs: int = 20
    # Beyond method.md: weight delta of a fourth term, added outside the formula above, that asks
    # the mean-pooled embedding to carry each layer's weight statistics through a linear head
    # (layer_statistics.py; docs/tuning.md, "What bounds R^2 on this zoo"). 0: the paper's C+S+B.
    statistics_weight: float = 0.0
    # Where delta ends: it moves linearly from `statistics_weight` at the end of the beta warm-up
    # to this value at the last epoch. None keeps delta constant.
    statistics_weight_final: float | None = None
    # "mse": MSE between softmaxes, the paper's stable variant. A weak original's softmax is nearly
    # flat, so under "mse" it costs almost nothing to rebuild it as a different, better model.
    # "mse_scaled" divides each model's softmax MSE by the variance of its original's softmax;
    # "logits" compares logits centred per query and divided by the original's logit spread (per
    # model), so every original's decision structure weighs the same. "kl": distillation (paper).
    behavioural_loss: BehaviouralKind = "mse"
    kl_temperature: float = 2.0  # distillation temperature of the "kl" variant (paper)
    contrastive_temperature: float = 0.1  # NT-Xent temperature (paper)
    # Query images per step, shared by all models of the batch. Paper: 256. 128 keeps a behavioural
    # step at about 1.2x a structure-only step on a 2-core CPU (1.36x at 256); drawn fresh every
    # step, 128 still covers the digits train split twice an epoch.
    n_queries: int = 128
    query_source: str = "train"  # "train" | "noise" | "dataset:<name>"; the zoo's own data is right
    # Decode both contrastive views (True) or the first only (structural and behavioural losses on
    # it). Both views are always encoded for L_C; one random view per step augments as much, and
    # skipping the second decoder pass saves about a quarter of a step.
    decode_both_views: bool = False

    # Standardisation of the tokens, fitted on the training split (normalisation.py): "none" reads
    # raw weights (paper), "layer" per layer as in the SANE code, "tensor" per state_dict tensor
    # (a layer's weights and its bias apart).
    token_normalisation: TokenNormalisation = "none"

    # ---- optimisation ----
    lr: float = 1e-4  # paper: 1e-5 with L_B on a GPU for 500 epochs; 1e-4 for short runs (method.md §11)
    weight_decay: float = 3e-9  # paper
    batch_size: int = 64  # checkpoints per step (paper)
    epochs: int = 60
    lr_schedule: LRSchedule = "none"  # paper: no scheduler
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    grad_clip: float | None = None  # paper: no clipping

    # ---- data ----
    token_width: int | None = None  # None: the longest row of the architecture
    include_batchnorm: bool = True  # tokenize BatchNorm parameters and statistics as their own layers
    zoo_epochs: tuple[int, ...] | None = None  # checkpoint epochs to train on; None: all the zoo stores

    # ---- validation and the collapse guard ----
    validate_every: int = 1  # epochs between validations (the last epoch is always validated)
    val_inputs: int = 2000  # validation images per model for the agreement (the whole split if fewer)
    # A model is "constant" when one class takes at least this fraction of its predictions.
    constant_class_fraction: float = 0.95
    # Warn loudly when at least this fraction of validation reconstructions are constant while
    # fewer originals are: the collapse of method.md §9 and §11.
    collapse_threshold: float = 0.5

    # ---- bookkeeping ----
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # mixed precision; CUDA only, ignored on the CPU
    checkpoint_every: int = 5  # epochs between resumable training checkpoints (0: only at the end)

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.beta <= 1.0:
            raise ValueError("gamma and beta must lie in [0, 1]")
        if not self.statistics_weight >= 0.0:
            raise ValueError("statistics_weight must be at least 0")
        if self.statistics_weight_final is not None:
            if not self.statistics_weight_final >= 0.0:
                raise ValueError("statistics_weight_final must be at least 0")
            if self.statistics_weight == 0.0 and self.statistics_weight_final > 0.0:
                raise ValueError("statistics_weight_final needs the term on: statistics_weight > 0")
        if self.behavioural_loss not in BEHAVIOURAL_KINDS:
            raise ValueError(
                f"behavioural_loss must be one of {', '.join(BEHAVIOURAL_KINDS)}, "
                f"not {self.behavioural_loss!r}"
            )
        if self.token_normalisation not in TOKEN_NORMALISATIONS:
            raise ValueError(
                f"token_normalisation must be one of {', '.join(TOKEN_NORMALISATIONS)}, "
                f"not {self.token_normalisation!r}"
            )
        if self.lr_schedule not in ("none", "cosine"):
            raise ValueError(f"lr_schedule must be 'none' or 'cosine', not {self.lr_schedule!r}")
        if self.batch_size < 2 and self.gamma > 0:
            raise ValueError("the contrastive loss needs at least 2 checkpoints per batch")
        if self.epochs < 1 or self.validate_every < 1:
            raise ValueError("epochs and validate_every must be at least 1")

    @property
    def uses_behaviour(self) -> bool:
        return self.beta < 1.0

    def beta_at(self, epoch_progress: float) -> float:
        """beta after `epoch_progress` epochs (fractional): the structure-first warm-up schedule."""
        if self.beta_warmup_epochs <= 0 or epoch_progress >= self.beta_warmup_epochs:
            return self.beta
        t = max(epoch_progress, 0.0) / self.beta_warmup_epochs
        return 1.0 + (self.beta - 1.0) * t

    def statistics_weight_at(self, epoch_progress: float) -> float:
        """delta after `epoch_progress` epochs: constant, or linear from the end of the warm-up to the
        last epoch when `statistics_weight_final` is set."""
        if self.statistics_weight_final is None:
            return self.statistics_weight
        start = max(self.beta_warmup_epochs, 0)
        if epoch_progress <= start or self.epochs <= start:
            return self.statistics_weight
        t = min((epoch_progress - start) / (self.epochs - start), 1.0)
        return self.statistics_weight + (self.statistics_weight_final - self.statistics_weight) * t

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        return _from_dict(cls, data)

    # ---- presets --------------------------------------------------------------------------------
    @classmethod
    def paper(cls) -> TrainingConfig:
        """The paper's GPU recipe (method.md §6): lr 1e-5, 500 epochs, no warm-up."""
        return cls(
            lr=1e-5, epochs=500, n_queries=256, beta_warmup_epochs=0, validate_every=10, checkpoint_every=25
        )

    @classmethod
    def cpu(cls) -> TrainingConfig:
        """The CPU recipe for the default digits zoo (docs/tuning.md): method.md §11's warm-up run with
        cheaper steps (128 queries, one decoded view), plus per-layer token standardisation and
        many more, larger optimiser steps. At the defaults (batch 64, lr 1e-4) a 60-epoch run is
        about 1,100 steps, too few for the decoder to learn structure: it rebuilds every checkpoint
        as the same generic good model (structural L2 on real values ~20, like the zoo's spread).
        Batch 16 costs about the same per epoch on a CPU and gives 4x the steps; lr 1e-3 with a
        cosine decay halved the structural L2 in 12-epoch runs without collapsing, and 30 epochs
        reached 75 % mean test agreement (old recipe on an H200, 60 epochs: 56 %). The field
        defaults keep the earlier recipe: a config recorded before a field existed reads back as
        what it ran with.

        Session 7 made three more changes, measured in docs/tuning.md ("The cpu preset of session
        7"). First, each state_dict tensor is standardised on its own ("tensor"), so a layer's
        biases are no longer at a quarter of its weights' scale. Second, the layer-statistics term
        is on (delta 1, beyond method.md). Third, 80 epochs instead of 60: at 60, agreement was
        still climbing. With the cpu autoencoder's ReLU latent, R^2 for test accuracy went from
        0.41 to 0.92, and test agreement from 86.2 % to 88.8 % (docs/results.md, csb_stats). The
        ablation's paper configurations (structure, behaviour, csb) still set delta 0.

        Session 8: delta falls linearly from 1 after the warm-up to 0.1 at the last epoch. At a
        constant 1 the fourth term was most of the loss late in training (its normalised value
        stays near 0.15 while the others fall under 0.05) and cost fidelity; decayed, the
        embedding keeps what it learnt (R^2 0.907 either way on seed 1) and agreement over originals
        >= 80 % rose from 96.7 % to 97.3 % (docs/tuning.md, "Session 8")."""
        return cls(
            token_normalisation="tensor",
            statistics_weight=1.0,
            statistics_weight_final=0.1,
            epochs=80,
            batch_size=16,
            lr=1e-3,
            lr_schedule="cosine",
        )

    @classmethod
    def tiny(cls) -> TrainingConfig:
        """For tests: a couple of epochs on a handful of checkpoints."""
        return cls(
            epochs=2, batch_size=8, n_queries=16, beta_warmup_epochs=0, val_inputs=64, checkpoint_every=1
        )

    @classmethod
    def preset(cls, name: str) -> TrainingConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown training preset {name!r}; known: {', '.join(PRESETS)}")
        return getattr(cls, name)()
