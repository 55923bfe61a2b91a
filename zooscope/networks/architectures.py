"""The architecture families of the public model zoos, plus a small CNN for 8x8 digits.

Every family is an `nn.Sequential` called `module_list`, so state_dict keys read
`module_list.<i>.weight` exactly as in the public Model Zoos (docs/method.md §2, §10). An
`Architecture` is a frozen description; `build()` makes the module, `parameter_layers()` lists the
layers that carry parameters in the order tokens, permutations and flat vectors use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal

import torch
from torch import nn

from zooscope.errors import UnknownArchitectureError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}
# The order of ACTIVATIONS numbers them: a per-model activation code (activation_codes) is an
# index into ACTIVATION_NAMES.
ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)
FAMILIES = ("cnn_s", "cnn3", "cnn_digits")
# The public zoos initialise every bias to this constant (docs/method.md §2).
BIAS_INIT = 0.01


@dataclass(frozen=True)
class ParameterLayer:
    """One layer that carries parameters, as tokens and permutations see it."""

    key: str  # state_dict prefix, e.g. "module_list.0"
    kind: Literal["conv", "linear", "batchnorm"]
    weight_shape: tuple[int, ...]
    # For a linear layer fed by a flattened conv output: how many inputs one channel spans (H*W).
    # Permuting that conv's channels moves whole blocks of this many columns.
    flatten_block: int = 1

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]

    @property
    def weight_key(self) -> str:
        return f"{self.key}.weight"

    @property
    def bias_key(self) -> str:
        return f"{self.key}.bias"

    @property
    def buffer_keys(self) -> tuple[str, ...]:
        """Running statistics of a BatchNorm layer (num_batches_tracked is never tokenized)."""
        if self.kind != "batchnorm":
            return ()
        return (f"{self.key}.running_mean", f"{self.key}.running_var")


@dataclass(frozen=True)
class Architecture:
    """A network family with its input shape and hyperparameters that change the module."""

    family: str
    in_channels: int
    image_size: int
    n_classes: int = 10
    activation: str = "relu"
    dropout: float = 0.0
    # CNN-s exists with and without dropout modules, which shifts its state_dict keys
    # (0,3,6,9,11 without, 0,4,8,11,14 with). CNN3 always has them; cnn_digits never.
    dropout_layers: bool = False
    batchnorm: bool = False  # cnn_digits only: BatchNorm after each conv

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise UnknownArchitectureError(f"unknown family {self.family!r}; known: {', '.join(FAMILIES)}")
        if self.activation not in ACTIVATIONS:
            raise UnknownArchitectureError(
                f"unknown activation {self.activation!r}; known: {', '.join(ACTIVATIONS)}"
            )
        if self.batchnorm and self.family != "cnn_digits":
            raise UnknownArchitectureError("batchnorm is available for the cnn_digits family only")

    # ---- naming and serialisation -------------------------------------------------------------
    @property
    def name(self) -> str:
        """A short, stable identifier, e.g. 'cnn_s-1x28x28'."""
        extra = "-dropout" if self.family == "cnn_s" and self._has_dropout_modules else ""
        extra += "-bn" if self.batchnorm else ""
        return f"{self.family}-{self.in_channels}x{self.image_size}x{self.image_size}{extra}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def with_activation(self, activation: str) -> Architecture:
        return Architecture(**{**self.to_dict(), "activation": activation})

    # ---- module ---------------------------------------------------------------------------------
    @property
    def _has_dropout_modules(self) -> bool:
        if self.family == "cnn3":
            return True
        if self.family == "cnn_digits":
            return False
        return self.dropout_layers or self.dropout > 0

    def build(self) -> nn.Module:
        """A fresh module with PyTorch's default init (zoo building re-initialises it)."""
        return _ModuleListNet(self._layers())

    def _layers(self) -> list[nn.Module]:
        act = ACTIVATIONS[self.activation]
        drop = [nn.Dropout(self.dropout)] if self._has_dropout_modules else []
        c = self.in_channels
        if self.family == "cnn_s":
            size = _conv_out(_conv_out(_conv_out(self.image_size, 5) // 2, 5) // 2, 2)
            return [
                nn.Conv2d(c, 8, 5), nn.MaxPool2d(2), act(), *drop,
                nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), act(), *drop,
                nn.Conv2d(6, 4, 2), act(), nn.Flatten(),
                nn.Linear(4 * size * size, 20), act(), *drop,
                nn.Linear(20, self.n_classes),
            ]  # fmt: skip
        if self.family == "cnn3":
            size = _conv_out(_conv_out(_conv_out(self.image_size, 3) // 2, 3) // 2, 3) // 2
            return [
                nn.Conv2d(c, 16, 3), nn.MaxPool2d(2), act(), *drop,
                nn.Conv2d(16, 32, 3), nn.MaxPool2d(2), act(), *drop,
                nn.Conv2d(32, 15, 3), nn.MaxPool2d(2), act(), *drop,
                nn.Flatten(),
                nn.Linear(15 * size * size, 20), act(), *drop,
                nn.Linear(20, self.n_classes),
            ]  # fmt: skip
        # cnn_digits: fits 8x8 inputs natively (conv 3x3 -> 6x6, pool -> 3x3, conv 2x2 -> 2x2).
        size = _conv_out(_conv_out(self.image_size, 3) // 2, 2)
        bn1 = [nn.BatchNorm2d(8)] if self.batchnorm else []
        bn2 = [nn.BatchNorm2d(8)] if self.batchnorm else []
        return [
            nn.Conv2d(c, 8, 3), *bn1, act(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 2), *bn2, act(), nn.Flatten(),
            nn.Linear(8 * size * size, 16), act(),
            nn.Linear(16, self.n_classes),
        ]  # fmt: skip

    def parameter_layers(self) -> list[ParameterLayer]:
        """Layers with parameters, in forward order, with the flatten block size where it applies."""
        layers: list[ParameterLayer] = []
        channels_before_flatten, spatial = None, None
        probe = torch.zeros(1, *self.input_shape)
        for index, module in enumerate(self._layers()):
            key = f"module_list.{index}"
            if isinstance(module, nn.Flatten):
                channels_before_flatten, spatial = probe.shape[1], probe.shape[2] * probe.shape[3]
            if isinstance(module, nn.Conv2d):
                layers.append(ParameterLayer(key, "conv", tuple(module.weight.shape)))
            elif isinstance(module, nn.BatchNorm2d):
                layers.append(ParameterLayer(key, "batchnorm", tuple(module.weight.shape)))
            elif isinstance(module, nn.Linear):
                block = 1
                if spatial is not None and module.in_features == channels_before_flatten * spatial:
                    block, spatial = spatial, None
                layers.append(ParameterLayer(key, "linear", tuple(module.weight.shape), block))
            with torch.no_grad():
                probe = module.eval()(probe)
        return layers

    @property
    def n_parameters(self) -> int:
        return _parameter_count(self)


class _ModuleListNet(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.module_list = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module_list(x)


def _conv_out(size: int, kernel: int) -> int:
    return size - kernel + 1


# Building a module (random init included) to read its sizes costs milliseconds, and every upload
# asks them of several candidates (detect_architecture): they are read once per architecture, on
# a forked random state, so that whether a size was asked before never moves a seeded draw.
@lru_cache(maxsize=64)
def _parameter_count(arch: Architecture) -> int:
    with torch.random.fork_rng(devices=[]):
        return sum(p.numel() for p in arch.build().parameters())


@lru_cache(maxsize=64)
def _reference_shapes(arch: Architecture) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(key, shape) of every tensor a checkpoint of `arch` holds, num_batches_tracked aside."""
    with torch.random.fork_rng(devices=[]):
        tensors = arch.build().state_dict().items()
    return tuple((k, tuple(v.shape)) for k, v in tensors if not k.endswith("num_batches_tracked"))


def reference_state_dict(arch: Architecture) -> dict[str, torch.Tensor]:
    """The full state_dict of a fresh module: the shapes every checkpoint of `arch` must have."""
    return {k: v.detach().clone() for k, v in arch.build().state_dict().items()}


def candidate_architectures() -> list[Architecture]:
    """Every (family, input) combination that detection considers."""
    out: list[Architecture] = []
    for channels in (1, 3):
        for size in (8, 28, 32):
            out.append(Architecture("cnn_s", channels, size))
            out.append(Architecture("cnn_s", channels, size, dropout_layers=True))
            out.append(Architecture("cnn3", channels, size))
            out.append(Architecture("cnn_digits", channels, size))
            out.append(Architecture("cnn_digits", channels, size, batchnorm=True))
    valid = []
    for arch in out:
        try:
            arch.parameter_layers()
        except RuntimeError:  # input too small for this family
            continue
        valid.append(arch)
    return valid


def detect_architecture(state_dict: dict[str, torch.Tensor], activation: str = "relu") -> Architecture:
    """The architecture whose keys and shapes match `state_dict` exactly.

    The weights cannot tell the activation function, so it is taken from the caller (a zoo's
    manifest or upload metadata), relu by default. Where two input sizes give the same shapes
    (CNN3 at 28 and 32 pixels both flatten to 60), the first candidate, the public one, wins.
    """
    shapes = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    for arch in _CANDIDATES_BY_PREFERENCE():
        if dict(_reference_shapes(arch)) == shapes:
            return arch.with_activation(activation)
    summary = ", ".join(f"{k}{list(v)}" for k, v in list(shapes.items())[:8])
    raise UnknownArchitectureError(
        f"the state_dict matches no known architecture ({', '.join(FAMILIES)}); "
        f"it holds {len(shapes)} tensors: {summary}"
    )


# ---- one canonical key layout per architecture ---------------------------------------------------
# CNN-s is published with and without nn.Dropout modules; dropout holds no tensor and is the
# identity in eval mode, so both layouts hold the same tensors and compute the same function, only
# under shifted keys (0,4,8,11,14 with, 0,3,6,9,11 without). The canonical layout is the one
# WITHOUT dropout modules: it is the layout of the default Architecture and of every built zoo
# trained without dropout, it names only what the function needs, and its population program has
# no dropout steps. CNN3 (always with dropout modules) and cnn_digits (never) have one layout.


def canonical_architecture(arch: Architecture) -> Architecture:
    """`arch` in its canonical key layout: CNN-s without dropout modules, the dropout rate (a
    training setting that changes no tensor and no eval-mode output) at 0."""
    return Architecture(**{**arch.to_dict(), "dropout": 0.0, "dropout_layers": False})


def same_function_family(a: Architecture, b: Architecture) -> bool:
    """Whether checkpoints of `a` and `b` can share a zoo: the same canonical layout, the
    activation (recorded per model where a zoo mixes them) aside."""
    return canonical_architecture(a.with_activation("relu")) == canonical_architecture(
        b.with_activation("relu")
    )


@lru_cache(maxsize=64)
def _layer_signature(arch: Architecture) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    return tuple((layer.key, layer.kind, layer.weight_shape) for layer in arch.parameter_layers())


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: Architecture, target: Architecture
) -> dict[str, torch.Tensor]:
    """The tensors of a `source` state_dict under `target`'s keys (the same tensor objects): layers
    with parameters are matched in forward order, and must agree in kind and shape."""
    src, dst = _layer_signature(source), _layer_signature(target)
    if [s[1:] for s in src] != [d[1:] for d in dst]:
        raise UnknownArchitectureError(f"{source.name} and {target.name} do not hold the same layers")
    prefix = {s[0]: d[0] for s, d in zip(src, dst, strict=True)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        layer, _, name = key.rpartition(".")
        if layer not in prefix:
            raise UnknownArchitectureError(f"{key} belongs to no layer with parameters of {source.name}")
        out[f"{prefix[layer]}.{name}"] = value
    return out


def canonical_state_dict(
    state_dict: Mapping[str, torch.Tensor], arch: Architecture
) -> dict[str, torch.Tensor]:
    """A state_dict of `arch` (either layout) in the canonical layout of canonical_architecture(arch)."""
    return convert_state_dict(state_dict, arch, canonical_architecture(arch))


def detect_canonical(
    state_dict: Mapping[str, torch.Tensor], activation: str = "relu"
) -> tuple[Architecture, dict[str, torch.Tensor]]:
    """detect_architecture for checkpoints of either key layout: (the canonical architecture, the
    state_dict in its layout). Both CNN-s layouts give the same architecture, so uploads and
    imports of either land together."""
    arch = detect_architecture(dict(state_dict), activation)
    return canonical_architecture(arch), canonical_state_dict(state_dict, arch)


def activation_codes(activations: Iterable[str]) -> torch.Tensor:
    """Per-model activation names as indices into ACTIVATION_NAMES (population_forward's
    `activations`)."""
    codes = []
    for name in activations:
        if name not in ACTIVATIONS:
            raise UnknownArchitectureError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
        codes.append(ACTIVATION_NAMES.index(name))
    return torch.tensor(codes, dtype=torch.long)


def _CANDIDATES_BY_PREFERENCE() -> list[Architecture]:  # noqa: N802 - cached constant
    global _CANDIDATE_CACHE
    if _CANDIDATE_CACHE is None:
        preferred = {"cnn_s": 28, "cnn3": 32, "cnn_digits": 8}
        _CANDIDATE_CACHE = sorted(
            candidate_architectures(), key=lambda a: (a.image_size != preferred[a.family], a.image_size)
        )
    return _CANDIDATE_CACHE


_CANDIDATE_CACHE: list[Architecture] | None = None


def initialise(module: nn.Module, init_type: str, generator: torch.Generator) -> None:
    """Re-initialise weights as the public zoos do: one of four schemes, biases at BIAS_INIT."""
    for sub in module.modules():
        if not isinstance(sub, nn.Conv2d | nn.Linear):
            continue
        w = sub.weight
        with torch.no_grad():
            if init_type == "uniform":
                w.uniform_(-1.0, 1.0, generator=generator)
            elif init_type == "normal":
                w.normal_(0.0, 1.0, generator=generator)
            elif init_type == "kaiming_uniform":
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
            elif init_type == "kaiming_normal":
                nn.init.kaiming_normal_(w, generator=generator)
            else:
                raise ValueError(f"unknown init {init_type!r}")
            if sub.bias is not None:
                sub.bias.fill_(BIAS_INIT)


INIT_TYPES = ("uniform", "normal", "kaiming_uniform", "kaiming_normal")
