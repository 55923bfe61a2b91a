"""What a zoo is made of: the data set, the architecture and the hyperparameter grid.

A zoo is the Cartesian product inits x learning rates x weight decays x seeds, every model
trained the same number of epochs with the same batch size; a few epochs are kept as
checkpoints. The config is a frozen dataclass recorded in every zoo's manifest.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from zooscope.errors import ZooscopeError
from zooscope.networks.architectures import INIT_TYPES, Architecture
from zooscope.zoo.presets import ZOO_PRESETS

# A healthy small CNN keeps every weight well under this; normal init starts near |w| = 4-5.
# A model whose largest weight passes it has run away (it is flagged, never dropped).
DEFAULT_DIVERGENCE_THRESHOLD = 100.0
# The paper splits BY MODEL 80/5/15 (docs/method.md §6).
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.05, 0.15)
SPLITS = ("train", "val", "test")


class ZooConfigError(ZooscopeError, ValueError):
    """A zoo config that cannot be built (bad grid values, epochs out of range, ...)."""


@dataclass(frozen=True)
class ModelSpec:
    """One cell of the grid: the hyperparameters of one model and the seed that made it."""

    index: int
    init: str
    lr: float
    wd: float
    replicate: int  # which of the n_seeds copies of this grid cell
    seed: int  # seeds this model's init and data order; derived from (config seed, index)
    # Seeds the init alone where models share it (ZooConfig.shared_init); None: `seed` does.
    init_seed: int | None = None

    @property
    def model_id(self) -> str:
        return f"m{self.index:05d}"


@dataclass(frozen=True)
class ZooConfig:
    dataset: str
    architecture: Architecture
    # None: the architecture's own activation; otherwise it replaces it.
    activation: str | None = None
    resize: int | None = None
    inits: tuple[str, ...] = INIT_TYPES
    learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    weight_decays: tuple[float, ...] = (0.0, 1e-4, 1e-3)
    n_seeds: int = 6
    epochs: int = 40
    batch_size: int = 32
    # Epochs whose weights are kept; 0 is the untrained model.
    checkpoint_epochs: tuple[int, ...] = (10, 20, 30, 40)
    split_fractions: tuple[float, float, float] = DEFAULT_SPLIT_FRACTIONS
    seed: int = 0
    # Every model of one init scheme starts from the same draw (its data order stays its own): a
    # zoo of trainings from one starting point, whose models differ by what they learnt, not by
    # their random init (docs/tuning.md, "Whose function the reconstructions keep").
    shared_init: bool = False
    divergence_threshold: float = DEFAULT_DIVERGENCE_THRESHOLD
    # Inputs per evaluation batch: bounds the memory of evaluating every model on a whole split.
    eval_batch_size: int = 64  # small batches keep activations in cache: faster on a CPU than 512

    def __post_init__(self) -> None:
        arch = self.architecture
        if isinstance(arch, dict):
            arch = Architecture.from_dict(arch)
        if not isinstance(arch, Architecture):
            raise ZooConfigError(
                f"architecture must be an Architecture or its dict, got {type(arch).__name__}"
            )
        if self.activation is not None and self.activation != arch.activation:
            arch = arch.with_activation(self.activation)
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "activation", arch.activation)
        for name in ("inits", "learning_rates", "weight_decays", "checkpoint_epochs", "split_fractions"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        unknown = [i for i in self.inits if i not in INIT_TYPES]
        if unknown or not self.inits:
            raise ZooConfigError(
                f"inits must be a non-empty subset of {', '.join(INIT_TYPES)}; got {self.inits}"
            )
        if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
            raise ZooConfigError(f"learning rates must be positive; got {self.learning_rates}")
        if not self.weight_decays or any(wd < 0 for wd in self.weight_decays):
            raise ZooConfigError(f"weight decays must be >= 0; got {self.weight_decays}")
        if self.n_seeds < 1 or self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ZooConfigError("n_seeds, epochs, batch_size and eval_batch_size must be >= 1")
        bad = [e for e in self.checkpoint_epochs if not 0 <= e <= self.epochs]
        if (
            bad
            or not self.checkpoint_epochs
            or list(self.checkpoint_epochs) != sorted(set(self.checkpoint_epochs))
        ):
            raise ZooConfigError(
                f"checkpoint epochs must be distinct, increasing and within 0..{self.epochs}; "
                f"got {self.checkpoint_epochs}"
            )
        fractions = self.split_fractions
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise ZooConfigError(
                f"split fractions must be three non-negative numbers summing to 1; got {fractions}"
            )
        if self.divergence_threshold <= 0:
            raise ZooConfigError("divergence_threshold must be positive")

    # ---- the grid -------------------------------------------------------------------------------
    @property
    def n_models(self) -> int:
        return len(self.inits) * len(self.learning_rates) * len(self.weight_decays) * self.n_seeds

    def model_specs(self) -> list[ModelSpec]:
        """Every model of the grid, in a fixed order: init, then lr, then wd, then replicate."""
        cells = itertools.product(self.inits, self.learning_rates, self.weight_decays, range(self.n_seeds))
        return [
            ModelSpec(
                index,
                init,
                float(lr),
                float(wd),
                replicate,
                model_seed(self.seed, index),
                shared_init_seed(self.seed, init) if self.shared_init else None,
            )
            for index, (init, lr, wd, replicate) in enumerate(cells)
        ]

    # ---- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["architecture"] = self.architecture.to_dict()
        for name in ("inits", "learning_rates", "weight_decays", "checkpoint_epochs", "split_fractions"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZooConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    # ---- presets --------------------------------------------------------------------------------
    @classmethod
    def default_digits(cls, **overrides: Any) -> ZooConfig:
        """The zoo the service builds on first start: the paper's grid shape, small enough for a CPU.

        4 inits x 5 learning rates x 3 weight decays x 6 seeds = 360 models of cnn_digits on 8x8
        digits, 40 epochs. Uniform and normal inits give poor models on purpose: the zoo needs
        a spread of accuracies for property prediction and for the behavioural loss to matter.
        """
        base = cls(dataset="digits", architecture=Architecture("cnn_digits", 1, 8))
        return base.replace(**overrides) if overrides else base

    @classmethod
    def digits_quick(cls, **overrides: Any) -> ZooConfig:
        """The default digits grid with one seed per cell: 60 models, the same inits, learning
        rates, weight decays, epochs and kept epochs, so the same spread of accuracies in a
        sixth of the build time (the zoo of the service's quick first default)."""
        base = cls.default_digits(n_seeds=1)
        return base.replace(**overrides) if overrides else base

    @classmethod
    def paper(cls, dataset: str = "svhn", **overrides: Any) -> ZooConfig:
        """The paper's zoo shape: 4 x 5 x 3 x 20 seeds = 1,200 CNN3 models, 50 epochs (a GPU job)."""
        base = cls(
            dataset=dataset,
            architecture=Architecture("cnn3", 3, 32),
            n_seeds=20,
            epochs=50,
            batch_size=32,
            checkpoint_epochs=(20, 30, 40, 50),
        )
        return base.replace(**overrides) if overrides else base

    @classmethod
    def tiny(cls, **overrides: Any) -> ZooConfig:
        """A digits zoo built in seconds, for tests and demos: 2 inits x 2 learning rates x 1 weight
        decay x 3 seeds = 12 models, 4 epochs; enough for a split with every side non-empty."""
        base = cls.default_digits(
            inits=("kaiming_uniform", "kaiming_normal"),
            learning_rates=(1e-3, 1e-2),
            weight_decays=(0.0,),
            n_seeds=3,
            epochs=4,
            checkpoint_epochs=(2, 4),
            split_fractions=(0.5, 0.25, 0.25),
        )
        return base.replace(**overrides) if overrides else base

    @classmethod
    def mnist5k_cnn_s(cls, **overrides: Any) -> ZooConfig:
        """CNN-s, the public Model Zoos' small CNN (2,464 parameters), on the 5,000 real MNIST
        images of mnist5k (3,000 train): 4 inits x 3 learning rates x 2 weight decays x 4 seeds =
        96 models, 24 epochs, kept every 6. Sized to build in about ten minutes on a 2-core CPU
        (docs/benchmarks.md); the uniform and normal inits again give the spread of accuracies
        that property prediction needs."""
        base = cls(
            dataset="mnist5k",
            architecture=Architecture("cnn_s", 1, 28),
            learning_rates=(1e-3, 3e-3, 1e-2),
            weight_decays=(0.0, 1e-3),
            n_seeds=4,
            epochs=24,
            checkpoint_epochs=(6, 12, 18, 24),
        )
        return base.replace(**overrides) if overrides else base

    @classmethod
    def mnist5k_cnn_s_kaiming(cls, **overrides: Any) -> ZooConfig:
        """The mnist5k-cnn-s grid on the two Kaiming inits only, with twice the seeds: 2 inits x 3
        learning rates x 2 weight decays x 8 seeds = 96 models, the same build time. In
        mnist5k-cnn-s the N(0, 1) and U(-1, 1) inits never train on CNN-s, keep weights 3 to 25
        times Kaiming's and so take 93 % of the standardised token energy: a structural loss
        spends itself on their noise, and the zoo's mean network is dead (docs/tuning.md, "Why
        the decoder lands on dead networks"). Here every model but two (Kaiming normal at the
        largest learning rate and weight decay, 10 %) trains (test accuracy mean 91.5 %, best
        95.7 %): the zoo to measure how much function a compressing latent keeps."""
        base = cls.mnist5k_cnn_s(inits=("kaiming_uniform", "kaiming_normal"), n_seeds=8)
        return base.replace(**overrides) if overrides else base

    @classmethod
    def mnist5k_cnn_s_shared_init(cls, **overrides: Any) -> ZooConfig:
        """mnist5k-cnn-s-kaiming with one init draw per scheme: every model of a scheme starts from
        the same weights and differs from the others by its learning rate, weight decay and data
        order. In the Kaiming zoo the random init is half of what tells two models apart, noise
        no code shorter than the weights keeps (docs/tuning.md, "Whose function the
        reconstructions keep"); here what tells them apart is what they learnt."""
        base = cls.mnist5k_cnn_s_kaiming(shared_init=True)
        return base.replace(**overrides) if overrides else base

    @classmethod
    def tiny_cnn_s(cls, **overrides: Any) -> ZooConfig:
        """A CNN-s zoo on mnist5k built in seconds, for tests: the tiny grid (12 models) for 2
        epochs."""
        base = cls.mnist5k_cnn_s(
            inits=("kaiming_uniform", "kaiming_normal"),
            learning_rates=(1e-3, 1e-2),
            weight_decays=(0.0,),
            n_seeds=3,
            epochs=2,
            checkpoint_epochs=(1, 2),
            split_fractions=(0.5, 0.25, 0.25),
        )
        return base.replace(**overrides) if overrides else base

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ZooConfig:
        """A zoo preset by name (zooscope.zoo.presets.ZOO_PRESETS), with field overrides
        (`dataset` included)."""
        makers = {
            "digits": cls.default_digits,
            "digits-quick": cls.digits_quick,
            "tiny": cls.tiny,
            "mnist5k-cnn-s": cls.mnist5k_cnn_s,
            "mnist5k-cnn-s-kaiming": cls.mnist5k_cnn_s_kaiming,
            "mnist5k-cnn-s-shared-init": cls.mnist5k_cnn_s_shared_init,
            "tiny-cnn-s": cls.tiny_cnn_s,
            "paper": cls.paper,
        }
        if name not in ZOO_PRESETS or name not in makers:
            raise ZooConfigError(f"unknown zoo preset {name!r}; known: {', '.join(ZOO_PRESETS)}")
        return makers[name](**overrides)

    def with_epochs(self, epochs: int) -> ZooConfig:
        """Trained for `epochs`: the checkpoint epochs before it are kept, and the last one added."""
        kept = tuple(e for e in self.checkpoint_epochs if e < epochs) + (epochs,)
        return self.replace(epochs=epochs, checkpoint_epochs=kept)

    def replace(self, **changes: Any) -> ZooConfig:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        if "architecture" in changes and "activation" not in changes:
            data["activation"] = None  # take the new architecture's activation
        return ZooConfig(**data)


def shared_init_seed(zoo_seed: int, init: str) -> int:
    """The seed of the one init draw that a shared-init zoo's models of scheme `init` start from
    (a sequence no model index reaches: model seeds are derived from two integers)."""
    return int(np.random.SeedSequence([zoo_seed, INIT_TYPES.index(init), 2**31]).generate_state(1)[0])


def model_seed(zoo_seed: int, model_index: int) -> int:
    """A model's own seed: independent of the rest of the grid, so any model can be rebuilt alone."""
    return int(np.random.SeedSequence([zoo_seed, model_index]).generate_state(1)[0])
