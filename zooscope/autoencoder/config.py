"""Configuration of the weight-space autoencoder (its size) and of its training (the recipe).

Both are frozen dataclasses with `to_dict()` / `from_dict()` so every artefact can record them.
Numbers without a source comment are our own choices; the paper's settings are in docs/method.md §3, §6.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal


def _from_dict(cls: type, data: dict[str, Any], legacy: Mapping[str, Any]) -> Any:
    """Build a dataclass from a recorded dict: a key it lacks takes its value in `legacy` (what a
    config recorded before the key existed ran with), unknown keys (newer artefacts) are ignored,
    and JSON lists become the tuples the dataclass declares."""
    known = {f.name for f in fields(cls)}
    values = {key: value for key, value in legacy.items() if key in known}
    for key, value in data.items():
        if key in known:
            values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


CONTRAST_INPUTS = ("flatten", "mean")
LATENT_ACTIVATIONS = ("none", "relu", "softplus")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Size of the SANE-style transformer autoencoder (docs/method.md §3)."""

    d_model: int = 128
    n_heads: int = 4
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    d_ff: int = 256  # 2 x d_model, not the usual 4x: see cpu()
    # Numbers per token; a checkpoint's latent is T x latent_dim numbers, and the embedding that
    # property prediction reads is their mean over tokens [latent_dim].
    latent_dim: int = 64
    # 0: one latent per weight token (the paper's design; a checkpoint's latent is T x latent_dim).
    # M > 0: a per-model latent of M learned latent tokens (M x latent_dim numbers whatever T is):
    # M query tokens join the encoder's sequence and their outputs are the latent; the decoder reads
    # them beside T position-only tokens and rebuilds the weights at those. The budget then goes
    # where the weights need it instead of an equal share to every token, padding and biases
    # included (docs/method.md §3; docs/tuning.md, "A compressing recipe").
    latent_tokens: int = 0
    dropout: float = 0.0  # the zoos are small and the views already augment; 0 keeps runs reproducible
    projection_dim: int = 30  # output of the contrastive projection head (docs/method.md §3)
    # What the contrastive head reads: "flatten" = the whole latent sequence [T*L] (docs/method.md §3);
    # "mean" = the mean-pooled embedding [L], the vector property prediction reads, so the
    # contrastive loss shapes that vector directly (docs/tuning.md, "Property prediction").
    contrast_on: str = "flatten"
    # A nonlinearity on the per-token latent: "none" (docs/method.md §3), "relu" or "softplus". A
    # linear code averaged over tokens keeps the mean of the weights and loses their spread; a
    # non-negative code must split signs over units, and its mean keeps magnitudes
    # (docs/tuning.md, "Property prediction").
    latent_activation: str = "relu"
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
        if self.latent_tokens < 0:
            raise ValueError("latent_tokens must be 0 (per-token latents) or a positive count")
        if len(self.max_positions) != 3:
            raise ValueError("max_positions needs three sizes: global, layer, channel")

    def latent_shape(self, n_tokens: int) -> tuple[int, int]:
        """The shape of one checkpoint's latent for a layout of n_tokens weight tokens."""
        return (self.latent_tokens or n_tokens, self.latent_dim)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoencoderConfig:
        """A recorded config (an artefact's config.json); a missing key reads as LEGACY_AUTOENCODER."""
        return _from_dict(cls, data, LEGACY_AUTOENCODER)

    # ---- presets --------------------------------------------------------------------------------
    @classmethod
    def paper(cls) -> AutoencoderConfig:
        """The paper's GPU size: about 21.5 M parameters at CNN3's token width (289), linear latent."""
        return cls(
            d_model=256,
            n_heads=8,
            n_encoder_layers=8,
            n_decoder_layers=8,
            d_ff=2048,
            latent_dim=64,
            latent_activation="none",
        )

    @classmethod
    def cpu(cls) -> AutoencoderConfig:
        """The CPU default: trains the default digits zoo (C+S+B) on a 2-core machine in minutes.

        d_ff is 2 x d_model rather than the usual 4x: on a CPU the feed-forward matmuls are most of
        the step, and halving them costs little reconstruction quality at this token count (~42).
        A ReLU latent of 64 per token: the mean-pooled embedding then keeps each layer's
        magnitudes, biases included. With the layer-statistics
        term it reaches R^2 0.92 for test accuracy where a linear latent of 32 reaches 0.87, at
        higher agreement (docs/tuning.md, "The cpu preset (2026-11-27)"). These are the field
        defaults: `AutoencoderConfig() == AutoencoderConfig.cpu()`.
        """
        return cls()

    @classmethod
    def quick(cls) -> AutoencoderConfig:
        """The service's first default, trained within a minute or two of the first start
        (worker/bootstrap.py): the cpu size halved in width and depth, about an eighth of its
        parameters. In the same time a smaller model takes more optimiser steps, and steps are
        what a short run lacks: on the digits-quick zoo, the cpu size after 300 steps kept 10 % of
        the test originals' predictions, this size after 1,440 steps 81 % (docs/benchmarks.md,
        "First minutes")."""
        return cls(d_model=64, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=128)

    @classmethod
    def compress(cls) -> AutoencoderConfig:
        """The cpu size with a latent that compresses: 8 numbers a token, linear. On cnn_digits
        that is 42 x 8 = 336 numbers for 1,042 parameters (0.32x): the autoencoder cannot copy the
        weights and has to keep what their function needs. The best of the compressing runs so
        far (docs/tuning.md, "A compressing recipe"): 58.0 % mean agreement on the test
        checkpoints, 92.1 % over originals >= 80 %, short of the 90 / 98 % it is meant for, and
        docs/tuning.md "What bounds agreement on the digits zoo" says why. A ReLU latent this
        narrow dies; wider linear latents (12, 16 a token) trained worse at lr 1e-3."""
        return cls(latent_dim=8, latent_activation="none")

    @classmethod
    def compress_cnn_s(cls) -> AutoencoderConfig:
        """The cpu size with a linear latent of 16 a token: on CNN-s (48 tokens, 2,464
        parameters) 768 numbers, 0.31x, a latent that cannot copy (on cnn_digits it would be
        0.64x). With TrainingConfig.compress_cnn_s on the mnist5k-cnn-s-kaiming zoo, C+S+B agrees
        with 91.0 % of the test originals' predictions where structure-only agrees with 27.0 %
        (docs/results-cnn-s-kaiming.md; docs/tuning.md, "A zoo of trained CNN-s networks")."""
        return cls(latent_dim=16, latent_activation="none")

    @classmethod
    def tiny(cls) -> AutoencoderConfig:
        """For tests: a few thousand parameters, a step takes milliseconds."""
        return cls(
            d_model=16,
            n_heads=2,
            n_encoder_layers=1,
            n_decoder_layers=1,
            d_ff=32,
            latent_dim=4,
            latent_activation="none",
        )

    @classmethod
    def preset(cls, name: str) -> AutoencoderConfig:
        if name not in AUTOENCODER_PRESETS:
            raise ValueError(f"unknown autoencoder preset {name!r}; known: {', '.join(AUTOENCODER_PRESETS)}")
        return getattr(cls, name)()


# What an artefact recorded before a key existed ran with: the first cpu preset, a linear latent
# of 32. AutoencoderConfig.from_dict fills a missing key from here, never from the field defaults
# (they follow the current recipe). Every field has an entry: a new field adds the value that
# configs recorded without it ran with.
LEGACY_AUTOENCODER: dict[str, Any] = {
    "d_model": 128,
    "n_heads": 4,
    "n_encoder_layers": 4,
    "n_decoder_layers": 4,
    "d_ff": 256,
    "latent_dim": 32,
    "latent_tokens": 0,
    "dropout": 0.0,
    "projection_dim": 30,
    "contrast_on": "flatten",
    "latent_activation": "none",
    "encoder_final_norm": True,
    "max_positions": (500, 50, 100),
}

# The presets of both configs (AutoencoderConfig.preset, TrainingConfig.preset), by the name the
# CLI (`ae train --preset`), the service's train_autoencoder jobs and ZOOSCOPE_DEFAULT_PRESET use.
AUTOENCODER_PRESETS = ("cpu", "paper", "tiny", "quick", "compress", "compress_cnn_s")
DEFAULT_AUTOENCODER_PRESET = "cpu"
# The embedded service's first default, made while the default preset trains (worker/bootstrap.py).
QUICK_AUTOENCODER_PRESET = "quick"

BehaviouralKind = Literal["mse", "mse_scaled", "logits", "kl"]
BEHAVIOURAL_KINDS = ("mse", "mse_scaled", "logits", "kl")
StructuralKind = Literal["mse", "relative"]
STRUCTURAL_KINDS = ("mse", "relative")  # losses.StructuralLoss's kinds
LRSchedule = Literal["none", "cosine"]
TokenNormalisation = Literal["none", "layer", "tensor"]
TOKEN_NORMALISATIONS = ("none", "layer", "tensor")  # normalisation.py's kinds
ContrastiveViews = Literal["function_preserving", "random", "none"]
CONTRASTIVE_VIEWS = ("function_preserving", "random", "none")


@dataclass(frozen=True)
class TrainingConfig:
    """The training recipe: L = gamma*L_C + (1-gamma)*(beta*L_S + (1-beta)*L_B) (docs/method.md §4, §6).

    The field defaults are the cpu recipe (`TrainingConfig() == TrainingConfig.cpu()`, why each
    value: cpu()); the paper's values are noted beside them. No field depends on the device: `amp`
    only acts on CUDA and `device` "auto" picks CUDA when there is one.
    """

    # ---- loss weights ----
    gamma: float = 0.05  # weight of the contrastive term (paper)
    beta: float = 0.1  # weight of STRUCTURE in the rest: 1 = structure-only baseline, 0 = behaviour-only
    # Structure-first warm-up: beta moves linearly from 1 to `beta` over this many epochs. Short CPU
    # runs otherwise fall into the one-constant-class solution (docs/method.md §11). 0 disables it.
    beta_warmup_epochs: int = 20
    # Beyond docs/method.md: weight delta of a fourth term, added outside the formula above, that asks
    # the mean-pooled embedding to carry each layer's weight statistics through a linear head
    # (layer_statistics.py; docs/tuning.md, "What bounds R^2 on this zoo"). 0: the paper's C+S+B.
    statistics_weight: float = 1.0
    # Where delta ends: it moves linearly from `statistics_weight` at the end of the beta warm-up
    # to this value at the last epoch. None keeps delta constant.
    statistics_weight_final: float | None = 0.1
    # "mse": MSE between softmaxes, the paper's stable variant. A weak original's softmax is nearly
    # flat, so under "mse" it costs almost nothing to rebuild it as a different, better model.
    # "mse_scaled" divides each model's softmax MSE by the variance of its original's softmax;
    # "logits" compares logits centred per query and divided by the original's logit spread (per
    # model), so every original's decision structure weighs the same. "kl": distillation (paper).
    behavioural_loss: BehaviouralKind = "mse"
    # The behavioural loss's form from epoch `later_behavioural_loss_epoch` on; None keeps
    # `behavioural_loss` throughout. The forms that weigh every original's decisions alike collapse
    # when they start from a flat decoder (docs/tuning.md, "`mse_scaled` collapses"): "mse" first
    # takes the decoder off its plateau, then this one asks it to keep weak originals' decisions too.
    later_behavioural_loss: BehaviouralKind | None = None
    later_behavioural_loss_epoch: int = 0
    # "mse": the paper's structural loss, each checkpoint weighing by the size of its tokens;
    # "relative": each checkpoint's error over its own tokens' mean square, so checkpoints of
    # every scale weigh alike (losses.StructuralLoss).
    structural_loss: StructuralKind = "mse"
    kl_temperature: float = 2.0  # distillation temperature of the "kl" variant (paper)
    # Beyond docs/method.md: the gradient a ReLU of the reconstructed networks passes where its input
    # is negative, in the behavioural term's forward (population/relu_gradient.py; values exact).
    # 0 is the true gradient: a network whose units are dead on every query gives the decoder none
    # back, and where the zoo's mean network is dead a shrinking decoder settles there
    # (docs/tuning.md, "Why the decoder lands on dead networks").
    behavioural_relu_gradient_slope: float = 0.0
    contrastive_temperature: float = 0.1  # NT-Xent temperature (paper)
    # Query images per step, shared by all models of the batch. Paper: 256. 128 keeps a behavioural
    # step at about 1.2x a structure-only step on a 2-core CPU (1.36x at 256); drawn fresh every
    # step, 128 still covers the digits train split twice an epoch.
    n_queries: int = 128
    # "train" | "uniform" | "gaussian" | "dataset:<name>" (datasets.QUERY_SOURCES; "noise" reads as
    # "uniform"); the zoo's own data is right
    query_source: str = "train"
    # The two views of a checkpoint that the contrastive term pulls together (docs/method.md §5, §9.3):
    # "function_preserving": two random neuron permutations that keep its function (the paper's);
    # "random": the second view permutes each hidden layer's units but not the next layer's inputs,
    # so it computes something else (the first, the decoded one, keeps the function, so the
    # reconstruction losses see what they always see); "none": no contrastive term (gamma 0).
    contrastive_views: ContrastiveViews = "function_preserving"
    # Decode both contrastive views (True) or the first only (structural and behavioural losses on
    # it). Both views are always encoded for L_C; one random view per step augments as much, and
    # skipping the second decoder pass saves about a quarter of a step.
    decode_both_views: bool = False

    # Standardisation of the tokens, fitted on the training split (normalisation.py): "none" reads
    # raw weights (paper), "layer" per layer as in the SANE code, "tensor" per state_dict tensor
    # (a layer's weights and its bias apart).
    token_normalisation: TokenNormalisation = "tensor"

    # ---- optimisation ----
    lr: float = 1e-3  # paper: 1e-5 with L_B on a GPU for 500 epochs (docs/method.md §6)
    weight_decay: float = 3e-9  # paper
    batch_size: int = 16  # checkpoints per step (paper: 64)
    epochs: int = 80
    lr_schedule: LRSchedule = "cosine"  # paper: no scheduler
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
    # fewer originals are: the collapse of docs/method.md §9 and §11.
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
        if self.later_behavioural_loss is not None:
            if self.later_behavioural_loss not in BEHAVIOURAL_KINDS:
                raise ValueError(
                    f"later_behavioural_loss must be one of {', '.join(BEHAVIOURAL_KINDS)}, "
                    f"not {self.later_behavioural_loss!r}"
                )
            if not self.later_behavioural_loss_epoch >= 1:
                raise ValueError("later_behavioural_loss_epoch must be at least 1")
        if not 0.0 <= self.behavioural_relu_gradient_slope < 1.0:
            raise ValueError("behavioural_relu_gradient_slope must lie in [0, 1)")
        if self.structural_loss not in STRUCTURAL_KINDS:
            raise ValueError(
                f"structural_loss must be one of {', '.join(STRUCTURAL_KINDS)}, not {self.structural_loss!r}"
            )
        if self.token_normalisation not in TOKEN_NORMALISATIONS:
            raise ValueError(
                f"token_normalisation must be one of {', '.join(TOKEN_NORMALISATIONS)}, "
                f"not {self.token_normalisation!r}"
            )
        if self.lr_schedule not in ("none", "cosine"):
            raise ValueError(f"lr_schedule must be 'none' or 'cosine', not {self.lr_schedule!r}")
        if self.contrastive_views not in CONTRASTIVE_VIEWS:
            raise ValueError(
                f"contrastive_views must be one of {', '.join(CONTRASTIVE_VIEWS)}, "
                f"not {self.contrastive_views!r}"
            )
        if self.contrastive_views == "none" and self.gamma > 0:
            raise ValueError("contrastive_views 'none' means no contrastive term: gamma must be 0")
        if self.contrastive_views == "random" and self.decode_both_views:
            raise ValueError(
                "decode_both_views needs function-preserving views: a 'random' view computes another "
                "function than the original the behavioural loss compares with"
            )
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

    def behavioural_loss_at(self, epoch_progress: float) -> str:
        """The behavioural loss's form after `epoch_progress` epochs (fractional)."""
        if self.later_behavioural_loss is not None and epoch_progress >= self.later_behavioural_loss_epoch:
            return self.later_behavioural_loss
        return self.behavioural_loss

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
        """A recorded config (an artefact's config.json); a missing key reads as LEGACY_TRAINING."""
        return _from_dict(cls, data, LEGACY_TRAINING)

    # ---- presets --------------------------------------------------------------------------------
    @classmethod
    def paper(cls) -> TrainingConfig:
        """The paper's GPU recipe (docs/method.md §6): C+S+B on raw weights, batch 64, lr 1e-5 without
        a schedule, 500 epochs, 256 queries, no warm-up."""
        return cls(
            statistics_weight=0.0,
            statistics_weight_final=None,
            token_normalisation="none",
            lr=1e-5,
            batch_size=64,
            epochs=500,
            lr_schedule="none",
            n_queries=256,
            beta_warmup_epochs=0,
            validate_every=10,
            checkpoint_every=25,
        )

    @classmethod
    def cpu(cls) -> TrainingConfig:
        """The CPU recipe for the default digits zoo (docs/tuning.md): the structure-first warm-up of
        docs/method.md §11 with cheaper steps (128 queries, one decoded view), plus:

        - Many more, larger optimiser steps: batch 16, lr 1e-3 with a cosine decay. At batch 64 and
          lr 1e-4 a 60-epoch run is about 1,100 steps, too few for the decoder to learn structure:
          it rebuilds every checkpoint as the same generic good model (structural L2 on real
          values ~20, like the zoo's spread). Batch 16 costs about the same per epoch on a CPU and
          gives 4x the steps; lr 1e-3 with a cosine decay halves the structural L2 without a
          collapse once the tokens are standardised.
        - Each state_dict tensor standardised on its own ("tensor"), so a layer's biases are not
          at a quarter of its weights' scale.
        - The layer-statistics term (beyond docs/method.md): delta 1 until the end of the warm-up,
          then falling linearly to 0.1 at the last epoch. With the cpu autoencoder's ReLU latent it
          lifts R^2 for test accuracy from 0.665 to 0.921 (docs/results.md, csb against
          csb_stats). Held at 1 it is most of the loss late in training (its normalised value stays
          near 0.15 while the others fall under 0.05) and costs fidelity; fading, the embedding
          keeps what it learnt (R^2 0.907 either way on seed 1) and agreement over originals
          >= 80 % rises from 96.7 % to 97.3 % (docs/tuning.md, "The fourth term fades").
        - 80 epochs: at 60, agreement is still climbing.

        These are the field defaults: `TrainingConfig() == TrainingConfig.cpu()`; a config recorded
        before a field existed reads back with LEGACY_TRAINING instead. The ablation's paper
        configurations (structure, behaviour, csb) set delta 0."""
        return cls()

    @classmethod
    def quick(cls) -> TrainingConfig:
        """The cpu recipe in 120 epochs for the quick size (AutoencoderConfig.quick), the warm-up
        a quarter of them as in the cpu recipe: 1,440 steps on the 60 models of the digits-quick
        zoo. Without the layer-statistics term it kept fewer predictions (57 % against 74 % at 100
        epochs)."""
        return cls(epochs=120, beta_warmup_epochs=30)

    @classmethod
    def compress(cls) -> TrainingConfig:
        """The cpu recipe for the compressing latent (AutoencoderConfig.compress), shortened to
        30 epochs with an 8-epoch warm-up (validation agreement plateaus by epoch 30: 80 epochs
        gained 0 to 2 points) and 512 queries a step (128 gave 0.8 points less and collapsed to one
        class for stretches with the other behavioural losses) (docs/tuning.md)."""
        return cls(epochs=30, beta_warmup_epochs=8, n_queries=512)

    @classmethod
    def compress_cnn_s(cls) -> TrainingConfig:
        """The cpu recipe (80 epochs, warm-up 20, 128 queries) for AutoencoderConfig.compress_cnn_s:
        the paper's three terms (no layer-statistics term) and the relative structural loss, so a
        checkpoint of small weights weighs as much as one of large weights (losses.StructuralLoss)."""
        return cls(statistics_weight=0.0, statistics_weight_final=None, structural_loss="relative")

    @classmethod
    def tiny(cls) -> TrainingConfig:
        """For tests: a couple of epochs on a handful of checkpoints, C+S+B on raw weights."""
        return cls(
            statistics_weight=0.0,
            statistics_weight_final=None,
            token_normalisation="none",
            lr=1e-4,
            lr_schedule="none",
            epochs=2,
            batch_size=8,
            n_queries=16,
            beta_warmup_epochs=0,
            val_inputs=64,
            checkpoint_every=1,
        )

    @classmethod
    def preset(cls, name: str) -> TrainingConfig:
        if name not in AUTOENCODER_PRESETS:
            raise ValueError(f"unknown training preset {name!r}; known: {', '.join(AUTOENCODER_PRESETS)}")
        return getattr(cls, name)()

    # ---- overrides ------------------------------------------------------------------------------
    def with_overrides(self, overrides: Mapping[str, Any] | None = None, /, **named: Any) -> TrainingConfig:
        """This recipe with some fields changed, each named as in TRAINING_OVERRIDES (the CLI's
        options, a train_autoencoder job's params, the ablation's configurations).

        A None value keeps this recipe's value, so a caller passes every option it has and only
        those that were given change anything. Turning the fourth term off (statistics_weight 0)
        also drops this recipe's schedule of it, unless statistics_weight_final is given too: there
        is no term left to schedule. Likewise contrastive_views "none" sets gamma 0 unless gamma is
        given too.
        """
        given = {**(overrides or {}), **named}
        unknown = sorted(set(given) - set(TRAINING_OVERRIDES))
        if unknown:
            raise ValueError(
                f"unknown training override(s) {', '.join(unknown)}; known: {', '.join(TRAINING_OVERRIDES)}"
            )
        changes = {TRAINING_OVERRIDES[name]: value for name, value in given.items() if value is not None}
        if changes.get("statistics_weight") == 0.0 and "statistics_weight_final" not in changes:
            changes["statistics_weight_final"] = None
        if changes.get("contrastive_views") == "none" and "gamma" not in changes:
            changes["gamma"] = 0.0
        return replace(self, **changes)


# What a config recorded before a key existed ran with: the first recipe (C+S+B on raw weights,
# batch 64, lr 1e-4 without a schedule, 60 epochs). TrainingConfig.from_dict fills a missing key
# from here, never from the field defaults (they follow the current recipe). Every field has an
# entry: a new field adds the value that configs recorded without it ran with.
LEGACY_TRAINING: dict[str, Any] = {
    "gamma": 0.05,
    "beta": 0.1,
    "beta_warmup_epochs": 20,
    "statistics_weight": 0.0,
    "statistics_weight_final": None,
    "behavioural_loss": "mse",
    "later_behavioural_loss": None,
    "later_behavioural_loss_epoch": 0,
    "kl_temperature": 2.0,
    "behavioural_relu_gradient_slope": 0.0,
    "structural_loss": "mse",
    "contrastive_temperature": 0.1,
    "n_queries": 128,
    "query_source": "train",
    "contrastive_views": "function_preserving",
    "decode_both_views": False,
    "token_normalisation": "none",
    "lr": 1e-4,
    "weight_decay": 3e-9,
    "batch_size": 64,
    "epochs": 60,
    "lr_schedule": "none",
    "min_lr_ratio": 0.1,
    "grad_clip": None,
    "token_width": None,
    "include_batchnorm": True,
    "zoo_epochs": None,
    "validate_every": 1,
    "val_inputs": 2000,
    "constant_class_fraction": 0.95,
    "collapse_threshold": 0.5,
    "seed": 0,
    "device": "auto",
    "amp": True,
    "checkpoint_every": 5,
}


# What a caller may change in a preset's TrainingConfig (TrainingConfig.with_overrides): the name it
# is given by (a CLI option, a job parameter) -> the field it sets. Most are the field's own name.
TRAINING_OVERRIDES: dict[str, str] = {
    "gamma": "gamma",
    "beta": "beta",
    "warmup_epochs": "beta_warmup_epochs",
    "statistics_weight": "statistics_weight",
    "statistics_weight_final": "statistics_weight_final",
    "behavioural_loss": "behavioural_loss",
    "relu_gradient_slope": "behavioural_relu_gradient_slope",
    "structural_loss": "structural_loss",
    "queries": "n_queries",
    "query_source": "query_source",
    "contrastive_views": "contrastive_views",
    "token_normalisation": "token_normalisation",
    "learning_rate": "lr",
    "batch_size": "batch_size",
    "epochs": "epochs",
    "lr_schedule": "lr_schedule",
    "seed": "seed",
    "device": "device",
}
