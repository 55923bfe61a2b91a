"""Slicing populations into batches of models and of inputs, so memory stays bounded.

Evaluation, generation and probing run hundreds of models over thousands of inputs. Every
model-forward here is one `population_forward` call over a block of models and a block of
inputs; these helpers choose and cut those blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

import torch

from zooscope.networks.architectures import Architecture
from zooscope.networks.parameters import StackedParams, n_models

# Floats one population_forward call may hold in its largest activation (about 1 GiB):
# bounds memory on a CPU and on a GPU alike, while keeping calls large enough to be efficient.
ACTIVATION_BUDGET = 2**28


def take(params: StackedParams, index: slice | torch.Tensor) -> StackedParams:
    return {key: value[index] for key, value in params.items()}


def concat(parts: list[StackedParams]) -> StackedParams:
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def to_device(params: StackedParams, device: torch.device | str) -> StackedParams:
    return {key: value.to(device) for key, value in params.items()}


def spans(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most `size` covering range(total)."""
    size = max(1, size)
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def map_models(
    fn: Callable[[StackedParams], torch.Tensor], params: StackedParams, batch_models: int
) -> torch.Tensor:
    """fn over blocks of models, results concatenated on the model axis (fn returns [k, ...])."""
    return torch.cat([fn(take(params, s)) for s in spans(n_models(params), batch_models)])


@lru_cache(maxsize=32)
def widest_activation(arch: Architecture) -> int:
    """Floats of the largest activation of one model on one input, the input included: what sizes
    the input chunks of the population program, the blocks of the high-level calls and the
    evaluation chunks of zoo training."""
    module = arch.build().eval()
    x = torch.zeros(1, *arch.input_shape)
    peak = x.numel()
    with torch.no_grad():
        for layer in module.module_list:
            x = layer(x)
            peak = max(peak, x.numel())
    return peak


def inputs_per_call(arch: Architecture, models: int, budget: int = ACTIVATION_BUDGET) -> int:
    """How many inputs to send with `models` models so that one call stays within `budget`."""
    # x3: the input of a layer, its output and the activation after it can be alive at once.
    return max(1, budget // (3 * widest_activation(arch) * max(1, models)))
