"""How the population program runs one convolution for K models at once.

Each convolution of an architecture gets one of three kernels, chosen once from its shapes
(`plan_convolutions`), with the index maps it needs precomputed:

* **shared input** (the first layer on inputs every model sees): one im2col gathered once for all
  models, then ONE matrix product with every model's filters stacked on the output axis,
  [n*positions, C*kh*kw] @ [C*kh*kw, K*out]. When a max-pool follows directly, the im2col rows
  are ordered by their offset inside the pool window, so the pool is a max over S contiguous
  slabs (`pool_slabs`), positions the pool would drop are never computed, and the bias is added
  after the pool, to a quarter of the values (max(a + b) = max(a) + b, exactly, in floating point
  too: rounding is monotone). The pool can write its result straight in the per-model layout the
  next layer wants.
* **dense**: a convolution over a few positions (3x3 -> 2x2 in cnn_digits) is one dense matrix
  per model, [H*W*C, Ho*Wo*out], gathered from the weights, run as one batched matrix product.
  It costs H*W/(kh*kw) times the convolution's arithmetic, so only small layers where that is at
  most DENSE_MAX_EXPANSION use it: at 8 output channels a grouped convolution (or an im2col and a
  batched product) spends far longer moving data than the extra arithmetic costs. When a flatten
  follows (through elementwise layers only), the matrix's columns are in nn.Flatten's order and
  its output is the flattened activation.
* **grouped**: everything else, one grouped convolution (groups = K) on the channels_last layout.

The weights each kernel needs (stacked, transposed, gathered) are built once per population
forward call (`prepare_convolution`), not once per input chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

# The dense kernel's arithmetic over the convolution's, and its matrix size per model, at most.
DENSE_MAX_EXPANSION = 4.0
DENSE_MAX_ENTRIES = 2**14


@dataclass(frozen=True)
class SharedInputConv:
    columns: (
        torch.Tensor
    )  # [rows, C*kh*kw + 1]: where each im2col value sits in one input's (H, W, C), then a 1
    out_hw: tuple[int, int]  # output size; the pooled size when slabs > 1
    slabs: int  # 1, or the area of the max-pool window the rows are ordered for
    pool_into_model: bool = False  # the pool writes [K, n, H, W, C] rather than [n, H, W, K*C]


@dataclass(frozen=True)
class DenseConv:
    entries: torch.Tensor  # [H*W*C, Ho*Wo*out]: index into the flat weight, or the zero slot after it
    out_hw: tuple[int, int]
    flattened: bool  # columns in nn.Flatten's (C, H, W) order rather than (H, W, C)


@dataclass(frozen=True)
class GroupedConv:
    pass


ConvPlan = SharedInputConv | DenseConv | GroupedConv


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _out_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def plan_convolution(
    conv: nn.Conv2d,
    in_chw: tuple[int, int, int],
    *,
    shared: bool,
    pooled_by: int | None,
    then_flattened: bool,
) -> ConvPlan:
    """The kernel for `conv` on inputs of shape in_chw. `pooled_by`: the kernel (= stride) of a
    max-pool that directly follows, if any; `then_flattened`: a flatten follows through elementwise
    layers only."""
    channels, height, width = in_chw
    (kh, kw), (sh, sw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    plain = _pair(conv.padding) == (0, 0) and conv.groups == 1 and conv.padding_mode == "zeros"
    out_h, out_w = _out_size(height, kh, sh, dh), _out_size(width, kw, sw, dw)

    def input_index(oi: int, oj: int, c: int, di: int, dj: int) -> int:
        return ((oi * sh + di * dh) * width + (oj * sw + dj * dw)) * channels + c

    taps = list(product(range(channels), range(kh), range(kw)))  # the weight's (C, kh, kw) order
    if shared and plain:
        if pooled_by:
            s = pooled_by
            pooled = (out_h // s, out_w // s)
            positions = [
                (pi * s + a, pj * s + b)
                for a, b in product(range(s), range(s))
                for pi, pj in product(range(pooled[0]), range(pooled[1]))
            ]
        else:
            pooled, positions = (out_h, out_w), list(product(range(out_h), range(out_w)))
        # the last column reads a constant 1 appended to each input: the bias rides in the product
        one = channels * height * width
        columns = torch.tensor([[*(input_index(oi, oj, *tap) for tap in taps), one] for oi, oj in positions])
        return SharedInputConv(columns, pooled, s * s if pooled_by else 1)
    out_channels = conv.out_channels
    expansion = (height * width) / (kh * kw)
    entries = height * width * channels * out_h * out_w * out_channels
    if not shared and plain and expansion <= DENSE_MAX_EXPANSION and entries <= DENSE_MAX_ENTRIES:
        zero_slot = out_channels * channels * kh * kw
        index = torch.full((height * width * channels, out_h * out_w * out_channels), zero_slot)
        for oi, oj, o in product(range(out_h), range(out_w), range(out_channels)):
            if then_flattened:
                column = (o * out_h + oi) * out_w + oj
            else:
                column = (oi * out_w + oj) * out_channels + o
            for c, di, dj in taps:
                index[input_index(oi, oj, c, di, dj), column] = ((o * channels + c) * kh + di) * kw + dj
        return DenseConv(index, (out_h, out_w), then_flattened)
    return GroupedConv()


@dataclass(frozen=True)
class PreparedConv:
    plan: ConvPlan
    models: int
    weight: torch.Tensor
    bias: torch.Tensor | None  # shaped for the kernel (the shared-input kernel has it in `weight`)


def prepare_convolution(plan: ConvPlan, weight: torch.Tensor, bias: torch.Tensor | None) -> PreparedConv:
    """The weights in the form the kernel multiplies by (weight [K, out, C, kh, kw], bias [K, out])."""
    k, out = weight.shape[:2]
    if isinstance(
        plan, SharedInputConv
    ):  # [C*kh*kw + 1, K*out]: all models' filters (and biases) side by side
        bias_row = weight.new_zeros(k * out, 1) if bias is None else bias.reshape(-1, 1)
        return PreparedConv(plan, k, torch.cat([weight.reshape(k * out, -1), bias_row], dim=1).T, None)
    if isinstance(plan, DenseConv):
        padded = torch.cat([weight.reshape(k, -1), weight.new_zeros(k, 1)], dim=1)
        dense = padded[:, plan.entries]  # [K, H*W*C, Ho*Wo*out]
        positions = plan.out_hw[0] * plan.out_hw[1]
        if bias is None:
            return PreparedConv(plan, k, dense, None)
        if plan.flattened:  # (C, H, W): each channel's bias repeated over its positions
            return PreparedConv(plan, k, dense, bias.unsqueeze(2).expand(k, out, positions).reshape(k, 1, -1))
        return PreparedConv(plan, k, dense, bias.unsqueeze(1).expand(k, positions, out).reshape(k, 1, -1))
    grouped_bias = None if bias is None else bias.reshape(-1)
    return PreparedConv(plan, k, weight.reshape(k * out, *weight.shape[2:]), grouped_bias)


def shared_input_conv(x: torch.Tensor, prepared: PreparedConv) -> torch.Tensor:
    """[n, H, W, C] shared by all models -> [n, Ho, Wo, K*out], or with pool slabs
    [n, slabs, Ho*Wo, K*out] for `pool_slabs`. The bias is part of the product (a column of ones)."""
    plan = prepared.plan
    assert isinstance(plan, SharedInputConv)
    n = x.shape[0]
    with_one = F.pad(x.reshape(n, -1), (0, 1), value=1.0)
    columns = with_one[:, plan.columns].reshape(-1, plan.columns.shape[1])
    out = columns @ prepared.weight
    if plan.slabs > 1:
        return out.view(n, plan.slabs, plan.out_hw[0] * plan.out_hw[1], -1)
    return out.view(n, *plan.out_hw, -1)


def pool_slabs(slabs: torch.Tensor, prepared: PreparedConv) -> torch.Tensor:
    """The max-pool after a pool-ordered shared-input convolution: [n, S, Ho*Wo, K*out] ->
    [n, Ho, Wo, K*out], or [K, n, Ho, Wo, out] if plan.pool_into_model."""
    plan, k = prepared.plan, prepared.models
    assert isinstance(plan, SharedInputConv)
    n, _, positions, kc = slabs.shape
    pooled = slabs.amax(1)
    if not plan.pool_into_model:
        return pooled.view(n, *plan.out_hw, kc)
    out = kc // k
    return pooled.view(n, positions, k, out).permute(2, 0, 1, 3).reshape(k, n, *plan.out_hw, out)


def dense_conv(x: torch.Tensor, prepared: PreparedConv) -> torch.Tensor:
    """[K, n, H, W, C] -> [K, n, Ho, Wo, out], or [K, n, out*Ho*Wo] if plan.flattened."""
    plan = prepared.plan
    assert isinstance(plan, DenseConv)
    k, n = x.shape[:2]
    flat = x.reshape(k, n, -1)
    if prepared.bias is None:
        out = torch.bmm(flat, prepared.weight)
    else:
        out = torch.baddbmm(prepared.bias, flat, prepared.weight)
    return out if plan.flattened else out.view(k, n, *plan.out_hw, -1)


def grouped_conv(x: torch.Tensor, prepared: PreparedConv, conv: nn.Conv2d) -> torch.Tensor:
    """[n, H, W, K*C] (the channels_last memory of [n, K*C, H, W]) -> [n, Ho, Wo, K*out]."""
    nchw = x.permute(0, 3, 1, 2)
    if not nchw.is_contiguous(memory_format=torch.channels_last):
        nchw = nchw.contiguous(memory_format=torch.channels_last)
    groups = prepared.models * conv.groups
    out = F.conv2d(nchw, prepared.weight, prepared.bias, conv.stride, conv.padding, conv.dilation, groups)
    return out.permute(0, 2, 3, 1)
