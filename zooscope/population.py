"""Run K weight sets of one architecture in one call (torch.func vmap over functional_call).

This is the engine of zoo training (all models train at once) and of the behavioural loss (all
reconstructions of a batch run at once, differentiably with respect to their weights).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.func import functional_call, vmap

from zooscope.architectures import Architecture
from zooscope.parameters import StackedParams


@lru_cache(maxsize=32)
def _template(arch: Architecture) -> nn.Module:
    # A module only supplies the forward code; its own tensors are never used.
    return arch.build()


def population_forward(
    arch: Architecture,
    params: StackedParams,
    inputs: torch.Tensor,
    *,
    train: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Logits of K models: [K, N, n_classes].

    `params` is {key: [K, *shape]} (see parameters.py). `inputs` is either one batch shared by
    every model, [N, C, H, W], or one batch per model, [K, N, C, H, W]. With `train=True`
    dropout is active, drawn independently per model. BatchNorm always uses the running
    statistics carried in `params` (population training does not update them).
    `chunk_size` bounds memory by running that many models at a time inside vmap.
    """
    module = _template(arch)
    module.train(train)
    if train and any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
        raise ValueError("population training of BatchNorm architectures is not supported")
    shared = inputs.dim() == len(arch.input_shape) + 1

    def run_one(p: StackedParams, x: torch.Tensor) -> torch.Tensor:
        return functional_call(module, p, (x,))

    in_dims = (0, None) if shared else (0, 0)
    batched = vmap(run_one, in_dims=in_dims, randomness="different" if train else "error", chunk_size=chunk_size)
    return batched(params, inputs)


def module_forward(arch: Architecture, state_dict: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """One model through a plain nn.Module in eval mode: the reference population_forward must match."""
    module = arch.build()
    module.load_state_dict(state_dict, strict=False)
    module.eval()
    with torch.no_grad():
        return module(inputs)
