"""A population of checkpoints as one tensor: stacking state_dicts and flattening them.

Everything downstream (zoo storage, tokens, permutations, the population forward) works on
*stacked* parameters, a dict {key: tensor[K, *shape]} for K models of one architecture, or on
the flat view [K, P] of it, so that no code loops over models in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from zooscope.errors import ArchitectureMismatchError
from zooscope.networks.architectures import Architecture, reference_state_dict

StackedParams = dict[str, torch.Tensor]


def n_models(params: StackedParams) -> int:
    """K, the number of models stacked in `params`."""
    return next(iter(params.values())).shape[0]


@dataclass(frozen=True)
class FlatLayout:
    """Where each tensor of a state_dict lives in the flat parameter vector."""

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.offsets[-1] + _numel(self.shapes[-1]) if self.keys else 0

    def slice_of(self, key: str) -> slice:
        i = self.keys.index(key)
        return slice(self.offsets[i], self.offsets[i] + _numel(self.shapes[i]))

    @classmethod
    @lru_cache(maxsize=64)  # every checkpoint check asks for it, and reading it off builds a module
    def of(cls, arch: Architecture) -> FlatLayout:
        """Parameters and float buffers (BatchNorm running stats), in state_dict order."""
        keys, shapes, offsets, offset = [], [], [], 0
        for key, value in reference_state_dict(arch).items():
            if not value.is_floating_point():  # num_batches_tracked: bookkeeping, not a weight
                continue
            keys.append(key)
            shapes.append(tuple(value.shape))
            offsets.append(offset)
            offset += value.numel()
        return cls(tuple(keys), tuple(shapes), tuple(offsets))

    def flatten(self, params: StackedParams) -> torch.Tensor:
        """{key: [K, *shape]} -> [K, P]."""
        k = n_models(params)
        return torch.cat([params[key].reshape(k, -1) for key in self.keys], dim=1)

    def unflatten(self, flat: torch.Tensor) -> StackedParams:
        """[K, P] -> {key: [K, *shape]} (views: differentiable, no copy)."""
        k = flat.shape[0]
        return {
            key: flat[:, off : off + _numel(shape)].reshape(k, *shape)
            for key, shape, off in zip(self.keys, self.shapes, self.offsets, strict=True)
        }


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def stack_state_dicts(arch: Architecture, state_dicts: Sequence[dict[str, torch.Tensor]]) -> StackedParams:
    """K state_dicts of `arch` -> {key: [K, *shape]}, checking keys and shapes of each."""
    layout = FlatLayout.of(arch)
    for i, sd in enumerate(state_dicts):
        check_state_dict(arch, sd, label=f"checkpoint {i}")
    return {
        key: torch.stack([sd[key].detach().to(torch.float32) for sd in state_dicts]) for key in layout.keys
    }


def unstack(params: StackedParams) -> list[dict[str, torch.Tensor]]:
    """{key: [K, ...]} -> K state_dicts (contiguous copies, ready to save)."""
    k = n_models(params)
    return [{key: value[i].detach().clone().contiguous() for key, value in params.items()} for i in range(k)]


def check_state_dict(
    arch: Architecture, state_dict: dict[str, torch.Tensor], label: str = "checkpoint"
) -> None:
    """Raise ArchitectureMismatchError unless every float tensor of `arch` is there with its shape."""
    layout = FlatLayout.of(arch)
    for key, shape in zip(layout.keys, layout.shapes, strict=True):
        if key not in state_dict:
            raise ArchitectureMismatchError(f"{label}: missing tensor {key!r} expected by {arch.name}")
        if tuple(state_dict[key].shape) != shape:
            raise ArchitectureMismatchError(
                f"{label}: tensor {key!r} has shape {list(state_dict[key].shape)}, "
                f"{arch.name} expects {list(shape)}"
            )
