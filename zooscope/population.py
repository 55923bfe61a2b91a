"""Run K weight sets of one architecture in one call.

This is the engine of zoo training (all models train at once) and of the behavioural loss (all
reconstructions of a batch run at once, differentiably with respect to their weights).

How: each architecture is compiled once into a *population program*, a list of steps read off
its `nn.Sequential` (conv, batchnorm, pool, activation, dropout, flatten, linear). The program
runs all K models on one wide tensor instead of K narrow ones:

* convolutions keep the models side by side on the channel axis, [n, K*C, H, W]. The first
  convolution over inputs SHARED by all models is one ordinary convolution with K*out channels
  (the weights of all models stacked on the output axis: one large GEMM over one im2col);
  every later convolution is a grouped convolution with groups=K;
* batchnorm, pooling, activations and dropout act on that wide tensor directly (they are
  per channel or elementwise, so per model by construction; dropout masks are therefore drawn
  independently per model);
* flatten turns [n, K*C, H, W] into [K, n, C*H*W] (per model, the order of nn.Flatten on
  [C, H, W]), and linear layers are one batched matmul over K.

Why it is fast on a CPU: at small per-model widths (8 channels, 5x5 kernels) a single model's
layers are memory-bound, and NCHW max-pooling in particular is slow; the program uses the
channels_last memory format (pooling and grouped convolutions are several times faster in it)
and walks the inputs in chunks, so that the wide activations of a chunk stay in cache between
layers rather than streaming gigabytes through main memory.

`population_forward_vmap` (torch.func vmap over functional_call on the nn.Module) is kept as
the reference implementation; the parity tests hold both to the plain nn.Module.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn
from torch.func import functional_call, vmap

from zooscope.architectures import Architecture
from zooscope.parameters import StackedParams

# Floats the widest activation of one input chunk may hold (n * K * C * H * W): 2 MiB of float32,
# the per-core L2 of the development VM. A sweep of 2**17..2**22 moved the 1000-input forward by
# less than run-to-run noise (docs/benchmarks.md); what bounds it is the GEMM rate of the thin
# first convolution, not the chunk size. Larger chunks only cost memory.
CHUNK_FLOATS = 2**19

StepKind = Literal["conv", "batchnorm", "pool", "elementwise", "dropout", "flatten", "linear"]


@dataclass(frozen=True)
class Step:
    """One layer of the population program."""

    kind: StepKind
    module: nn.Module  # supplies hyperparameters (stride, kernel, eps, p, the activation) only
    key: str = ""  # state_dict prefix of the layer's tensors, for layers that have any


@lru_cache(maxsize=32)
def _template(arch: Architecture) -> nn.Module:
    # A module only supplies the forward code; its own tensors are never used.
    return arch.build()


@lru_cache(maxsize=32)
def population_program(arch: Architecture) -> tuple[Step, ...]:
    """The steps of `arch`, in forward order, with the parameter keys of each layer."""
    sequential = _template(arch).module_list  # type: ignore[union-attr]
    keyed = {layer.key for layer in arch.parameter_layers()}
    steps: list[Step] = []
    for index, module in enumerate(sequential):
        key = f"module_list.{index}"
        if isinstance(module, nn.Conv2d):
            steps.append(Step("conv", module, key))
        elif isinstance(module, nn.BatchNorm2d):
            steps.append(Step("batchnorm", module, key))
        elif isinstance(module, nn.Linear):
            steps.append(Step("linear", module, key))
        elif isinstance(module, nn.MaxPool2d):
            steps.append(Step("pool", module))
        elif isinstance(module, nn.Dropout):
            steps.append(Step("dropout", module))
        elif isinstance(module, nn.Flatten):
            steps.append(Step("flatten", module))
        elif isinstance(module, nn.ReLU | nn.Tanh | nn.GELU | nn.Sigmoid):
            steps.append(Step("elementwise", module))
        else:  # a new layer type must be taught to the program, not silently mis-run
            raise TypeError(f"population program: unsupported layer {type(module).__name__} in {arch.name}")
    if {step.key for step in steps if step.key} != keyed:
        raise AssertionError(f"population program of {arch.name} disagrees with its parameter layers")
    return tuple(_pool_before_monotone_activation(steps))


# max(f(a), f(b)) == f(max(a, b)) for a non-decreasing f, so such an activation directly before
# a max-pool can run after it, on a quarter of the values (GELU dips below zero: not monotone).
MONOTONE_ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.Sigmoid)


def _pool_before_monotone_activation(steps: list[Step]) -> list[Step]:
    out = list(steps)
    for i in range(len(out) - 1):
        first, second = out[i], out[i + 1]
        if (
            first.kind == "elementwise"
            and isinstance(first.module, MONOTONE_ACTIVATIONS)
            and second.kind == "pool"
        ):
            out[i], out[i + 1] = second, first
    return out


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
    `chunk_size` bounds memory by running that many models at a time.
    Differentiable with respect to `params` (and `inputs`).
    """
    if train and arch.batchnorm:
        raise ValueError("population training of BatchNorm architectures is not supported")
    shared = inputs.dim() == len(arch.input_shape) + 1
    k = next(iter(params.values())).shape[0]
    if chunk_size is not None and chunk_size < k:
        blocks = []
        for start in range(0, k, chunk_size):
            block = {key: value[start : start + chunk_size] for key, value in params.items()}
            x = inputs if shared else inputs[start : start + chunk_size]
            blocks.append(_forward_all_inputs(arch, block, x, shared, train))
        return torch.cat(blocks)
    return _forward_all_inputs(arch, params, inputs, shared, train)


def _forward_all_inputs(
    arch: Architecture, params: StackedParams, inputs: torch.Tensor, shared: bool, train: bool
) -> torch.Tensor:
    """The program over input chunks sized by CHUNK_FLOATS; logits [K, N, classes]."""
    k = next(iter(params.values())).shape[0]
    n_inputs = inputs.shape[0] if shared else inputs.shape[1]
    per_input = k * _widest_activation(arch)
    step = max(1, CHUNK_FLOATS // per_input)
    if step >= n_inputs:
        return _run_program(arch, params, inputs, shared, train)
    outputs = [
        _run_program(
            arch,
            params,
            inputs[start : start + step] if shared else inputs[:, start : start + step],
            shared,
            train,
        )
        for start in range(0, n_inputs, step)
    ]
    return torch.cat(outputs, dim=1)


@lru_cache(maxsize=32)
def _widest_activation(arch: Architecture) -> int:
    """Floats of the largest activation of one model on one input."""
    widest, probe = 0, torch.zeros(1, *arch.input_shape)
    with torch.no_grad():
        for module in _template(arch).module_list.eval():  # type: ignore[union-attr]
            probe = module(probe)
            widest = max(widest, probe.numel())
    return widest


def _run_program(
    arch: Architecture, params: StackedParams, x: torch.Tensor, shared: bool, train: bool
) -> torch.Tensor:
    """All K models on one chunk of inputs: [n, C, H, W] shared or [K, n, C, H, W] -> [K, n, classes]."""
    k = next(iter(params.values())).shape[0]
    if shared:
        n = x.shape[0]
        per_model = False  # h carries no model axis until the first layer with weights
    else:
        n = x.shape[1]
        # [K, n, C, H, W] -> [n, K*C, H, W]: models side by side on the channel axis
        x = x.transpose(0, 1).reshape(n, -1, *x.shape[3:])
        per_model = True
    # channels_last: max-pooling and the grouped convolutions are several times faster in it
    h = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    for step in population_program(arch):
        module = step.module
        if step.kind == "conv":
            assert isinstance(module, nn.Conv2d)
            w = params[f"{step.key}.weight"]
            weight = w.reshape(-1, *w.shape[2:])  # [K*out, in, kh, kw], model-major like h
            bias = params[f"{step.key}.bias"].reshape(-1) if module.bias is not None else None
            if not per_model:  # shared input: one convolution with all models' filters stacked
                h = F.conv2d(h, weight, bias, module.stride, module.padding, module.dilation, module.groups)
            else:
                groups = k * module.groups
                h = F.conv2d(h, weight, bias, module.stride, module.padding, module.dilation, groups)
            per_model = True
        elif step.kind == "batchnorm":
            assert isinstance(module, nn.BatchNorm2d)
            h = F.batch_norm(
                h,
                params[f"{step.key}.running_mean"].reshape(-1),
                params[f"{step.key}.running_var"].reshape(-1),
                params[f"{step.key}.weight"].reshape(-1),
                params[f"{step.key}.bias"].reshape(-1),
                False,
                0.0,
                module.eps,
            )
        elif step.kind == "pool":
            assert isinstance(module, nn.MaxPool2d)
            h = F.max_pool2d(
                h, module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode
            )
        elif step.kind == "elementwise":
            h = module(h)
        elif step.kind == "dropout":
            assert isinstance(module, nn.Dropout)
            if not per_model:  # a mask shared by all models would not be independent per model
                h, per_model = _expand_models(h, k), True
            h = F.dropout(h, module.p, train)
        elif step.kind == "flatten":
            if not per_model:
                h, per_model = _expand_models(h, k), True
            # [n, K*C, H, W] -> [K, n, C*H*W]; reshape copies out of channels_last, so each
            # model's features are in nn.Flatten's (C, H, W) order
            h = h.reshape(n, k, -1).transpose(0, 1)
        else:  # linear, h: [K, n, in]
            w = params[f"{step.key}.weight"]  # [K, out, in]
            b = params.get(f"{step.key}.bias")
            if b is None:
                h = torch.bmm(h, w.transpose(1, 2))
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
    return h


def _expand_models(h: torch.Tensor, k: int) -> torch.Tensor:
    """A shared activation [n, C, ...] repeated for K models, as [n, K*C, ...]."""
    return h.unsqueeze(1).expand(h.shape[0], k, *h.shape[1:]).reshape(h.shape[0], -1, *h.shape[2:])


def population_forward_vmap(
    arch: Architecture,
    params: StackedParams,
    inputs: torch.Tensor,
    *,
    train: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The reference implementation: vmap over functional_call on the nn.Module (same contract)."""
    module = _template(arch)
    module.train(train)
    if train and arch.batchnorm:
        raise ValueError("population training of BatchNorm architectures is not supported")
    shared = inputs.dim() == len(arch.input_shape) + 1

    def run_one(p: StackedParams, x: torch.Tensor) -> torch.Tensor:
        return functional_call(module, p, (x,))

    in_dims = (0, None) if shared else (0, 0)
    batched = vmap(
        run_one, in_dims=in_dims, randomness="different" if train else "error", chunk_size=chunk_size
    )
    return batched(params, inputs)


def module_forward(
    arch: Architecture, state_dict: dict[str, torch.Tensor], inputs: torch.Tensor
) -> torch.Tensor:
    """One model through a plain nn.Module in eval mode: the reference population_forward must match."""
    module = arch.build()
    module.load_state_dict(state_dict, strict=False)
    module.eval()
    with torch.no_grad():
        return module(inputs)
