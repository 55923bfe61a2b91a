"""How the population program runs one convolution for K models at once.

Each convolution of an architecture gets one of four kernels, chosen once from its shapes
(`plan_convolution`), with the index maps it needs precomputed:

* **shared input** (the first layer on inputs every model sees): one im2col gathered once for all
  models, then ONE matrix product with every model's filters (and biases, against a column of
  ones) stacked on one axis. When a max-pool follows directly, the im2col is ordered by offset
  inside the pool window, so the pool is a max over S contiguous slabs (`pool_slabs`) and
  positions the pool would drop are never computed. The product comes in two orientations:
  [n*positions, taps] @ [taps, K*out] gives the channels_last layout a grouped convolution reads
  next; [K*out, taps] @ [taps, positions*n] gives the per-model layout [K, C, H, W, n] that dense
  convolutions and linear layers read, with no transpose in between. A 3x3 layer of several input
  channels with a 2x2 pool into the per-model layout skips the im2col where the compiled kernel's
  build has a Winograd path: that path reads the image itself (`SlabMaxProduct.winograd`).
* **dense**: a convolution over a few positions (3x3 -> 2x2 in cnn_digits) is one dense matrix
  per model, [out*Ho*Wo, C*H*W], gathered from the weights, run as one batched matrix product on
  the per-model layout. It costs H*W/(kh*kw) times the convolution's arithmetic, so only small
  layers where that is at most DENSE_MAX_EXPANSION use it: at 8 output channels a grouped
  convolution (or an im2col and a batched product) spends far longer moving data than the extra
  arithmetic costs.
* **compiled**: everything else, where the call lets this layer run a compiled kernel (calls the
  kernels may serve, `compiled_kernels_may_run`: float32, CPU, no autograd graph; layers the
  autotune found faster compiled, forward.convolution_paths), the C kernel of compiled_kernels.py
  on the per-model layout, with the max-pool after it in the same pass. A shared-input layer
  that may run compiled and pools into the per-model layout runs its product and pool in one C
  kernel too (`SharedInputConv.compiled`).
* **grouped**: everything else, one grouped convolution (groups = K) on the channels_last layout.

The weights each kernel needs (stacked, transposed, gathered) are built once per population
forward call (`prepare_convolution`), not once per input chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from zooscope.population import relu_gradient
from zooscope.population.compiled_kernels import model_conv_kernel, slab_max_product_kernel

# The dense kernel's arithmetic over the convolution's, and its matrix size per model, at most.
DENSE_MAX_EXPANSION = 4.0
DENSE_MAX_ENTRIES = 2**14
# Input channels a shared-input layer needs before the Winograd path pays: its output transform
# costs each filter about 150 operations a block of four pooled outputs, whatever the channels,
# against 16 (9C + 1) multiply-adds of the im2col product saved down to 36C. With one channel
# (cnn_digits) it ran 1.8x slower than the product, with three (CNN3) 1.4x faster (Zen 4 EPYC).
SHARED_WINOGRAD_MIN_CHANNELS = 2


@dataclass(frozen=True)
class SharedInputConv:
    # [rows, C*kh*kw + 1]: where each im2col value sits in one input's (H, W, C), then a 1
    columns: torch.Tensor
    out_hw: tuple[int, int]  # output size; the pooled size when slabs > 1
    slabs: int  # 1, or the area of the max-pool window the rows are ordered for
    pool_into_model: bool = False  # the pool writes [K, C, H, W, n] rather than [n, H, W, K*C]
    # the product and that pool run in compiled_kernels.SlabMaxProduct (pool_into_model only)
    compiled: bool = False
    # the layer's stride and dilation: where the compiled kernel's build has a Winograd path for
    # the layer, that path runs from the image instead of the im2col
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    # columns.T, contiguous: a gather's result takes its index's strides, and the per-model
    # orientation needs the im2col [taps, rows, n] contiguous
    by_tap: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_tap", self.columns.T.contiguous())


@dataclass(frozen=True)
class DenseConv:
    # [out*Ho*Wo, C*H*W], both in (channel, row, column) order: index into the flat weight, or
    # the zero slot after it
    entries: torch.Tensor
    out_hw: tuple[int, int]


@dataclass(frozen=True)
class CompiledConv:
    """The compiled per-model convolution (compiled_kernels.ModelConv) on [K, C, H, W, n]."""

    stride: tuple[int, int]
    dilation: tuple[int, int]
    pool: int | None = None  # the max-pool that follows, run by the same kernel in the pool step


@dataclass(frozen=True)
class GroupedConv:
    pass


ConvPlan = SharedInputConv | DenseConv | CompiledConv | GroupedConv


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
    compiled: bool = False,
) -> ConvPlan:
    """The kernel for `conv` on inputs of shape in_chw; `pooled_by`: the kernel (= stride) of a
    max-pool that directly follows, if any; `compiled`: whether this layer may run a compiled
    kernel in this call (the shared-input kernel's is set later, with its pool's layout)."""
    channels, height, width = in_chw
    (kh, kw), (sh, sw), (dh, dw) = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    plain = _pair(conv.padding) == (0, 0) and conv.groups == 1 and conv.padding_mode == "zeros"
    out_h, out_w = _out_size(height, kh, sh, dh), _out_size(width, kw, sw, dw)
    taps = list(product(range(channels), range(kh), range(kw)))  # the weight's (C, kh, kw) order

    def source(oi: int, oj: int, di: int, dj: int) -> tuple[int, int]:
        return oi * sh + di * dh, oj * sw + dj * dw

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

        def shared_index(oi: int, oj: int, c: int, di: int, dj: int) -> int:  # input as (H, W, C)
            i, j = source(oi, oj, di, dj)
            return (i * width + j) * channels + c

        # the last column reads a constant 1 appended to each input: the bias rides in the product
        one = channels * height * width
        columns = torch.tensor([[*(shared_index(oi, oj, *tap) for tap in taps), one] for oi, oj in positions])
        return SharedInputConv(columns, pooled, s * s if pooled_by else 1, stride=(sh, sw), dilation=(dh, dw))
    out_channels = conv.out_channels
    expansion = (height * width) / (kh * kw)
    entries = height * width * channels * out_h * out_w * out_channels
    if not shared and plain and expansion <= DENSE_MAX_EXPANSION and entries <= DENSE_MAX_ENTRIES:
        zero_slot = out_channels * channels * kh * kw
        index = torch.full((out_channels * out_h * out_w, channels * height * width), zero_slot)
        for o, oi, oj in product(range(out_channels), range(out_h), range(out_w)):
            for c, di, dj in taps:
                i, j = source(oi, oj, di, dj)
                weight = ((o * channels + c) * kh + di) * kw + dj
                index[(o * out_h + oi) * out_w + oj, (c * height + i) * width + j] = weight
        return DenseConv(index, (out_h, out_w))
    if compiled and plain:
        return CompiledConv((sh, sw), (dh, dw), pooled_by)
    return GroupedConv()


def autograd_free(*tensors: torch.Tensor) -> bool:
    """True when no autograd graph will need a result computed from `tensors`: it may then be
    written in place or into reused memory."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def compiled_kernel_built(plan: ConvPlan) -> bool:
    """Whether the compiled kernel `plan` would run is built here (False for plans that run none)."""
    if isinstance(plan, CompiledConv):
        return model_conv_kernel() is not None
    if isinstance(plan, SharedInputConv) and plan.compiled:
        return slab_max_product_kernel() is not None
    return False


def compiled_kernels_may_run(*tensors: torch.Tensor) -> bool:
    """Whether a step on `tensors` may use a compiled kernel (compiled_kernels.py): they take
    float32 on the CPU and have no backward, so no autograd graph may need their result."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and autograd_free(
        *tensors
    )


class ChunkMemory:
    """Output memory that population_forward reuses from input chunk to input chunk (and from call
    to call, one per thread), for activations no autograd graph keeps: a fresh allocation of MiBs
    per chunk came back from the kernel as new pages each time, and faulting them in made the
    first product several times slower inside the forward than alone. An activation in it lives
    until the same step runs on the next chunk, so a chunk's final output must never be placed
    here."""

    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def out(self, name: str, shape: tuple[int, ...], *inputs: torch.Tensor) -> torch.Tensor | None:
        """Where to write a step's output computed from `inputs` (an `out=` argument): the named
        memory, or None (a fresh tensor) when autograd needs the output kept."""
        return self.tensor(name, shape, inputs[0]) if autograd_free(*inputs) else None

    def tensor(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A tensor of `shape` in the named memory, grown when a larger one is asked for."""
        size = math.prod(shape)
        memory = self._tensors.get(name)
        if (
            memory is None
            or memory.numel() < size
            or memory.dtype != like.dtype
            or memory.device != like.device
        ):
            # a normal tensor even inside inference_mode: an inference tensor could not be written
            # by a later call made outside it (under no_grad, say)
            with torch.inference_mode(False):
                memory = self._tensors[name] = torch.empty(size, dtype=like.dtype, device=like.device)
        return memory[:size].view(shape)


@dataclass(frozen=True)
class PreparedConv:
    plan: ConvPlan
    memory: ChunkMemory
    name: str  # the layer's state_dict prefix: its outputs' name in the chunk memory
    models: int
    weight: torch.Tensor
    bias: torch.Tensor | None  # shaped for the kernel (the shared-input product has it in `weight`)
    # a shared-input layer's Winograd filters (SlabMaxProduct.winograd_filters), where it takes
    # that path
    filters: torch.Tensor | None = None


def prepare_convolution(
    plan: ConvPlan, weight: torch.Tensor, bias: torch.Tensor | None, memory: ChunkMemory, name: str
) -> PreparedConv:
    """The weights in the form the kernel multiplies by (weight [K, out, C, kh, kw], bias [K, out])."""
    k, out = weight.shape[:2]
    if isinstance(plan, SharedInputConv):
        filters = _shared_winograd_filters(plan, weight, memory, name)
        if filters is not None:  # the image, the filters and the biases go to the kernel as they are
            kernel_bias = None if bias is None else bias.contiguous()
            return PreparedConv(plan, memory, name, k, weight, kernel_bias, filters)
        # [K*out, taps + 1]: all models' filters and biases
        bias_column = weight.new_zeros(k * out, 1) if bias is None else bias.reshape(-1, 1)
        stacked = torch.cat([weight.reshape(k * out, -1), bias_column], dim=1)
        return PreparedConv(plan, memory, name, k, stacked if plan.pool_into_model else stacked.T, None)
    if isinstance(plan, DenseConv):
        padded = torch.cat([weight.reshape(k, -1), weight.new_zeros(k, 1)], dim=1)
        # [K, out*Ho*Wo, C*H*W]; index_select on the flat index took a third of the time of
        # indexing with the 2-d one (1.4 of CNN-s's 16 ms at 32 inputs)
        dense = padded.index_select(1, plan.entries.view(-1)).view(k, *plan.entries.shape)
        positions = plan.out_hw[0] * plan.out_hw[1]
        if bias is None:
            return PreparedConv(plan, memory, name, k, dense, None)
        return PreparedConv(
            plan, memory, name, k, dense, bias.unsqueeze(2).expand(k, out, positions).reshape(k, -1, 1)
        )
    if isinstance(plan, CompiledConv):
        return PreparedConv(
            plan, memory, name, k, weight.contiguous(), None if bias is None else bias.contiguous()
        )
    grouped_bias = None if bias is None else bias.reshape(-1)
    return PreparedConv(plan, memory, name, k, weight.reshape(k * out, *weight.shape[2:]), grouped_bias)


def _shared_winograd_filters(
    plan: SharedInputConv, weight: torch.Tensor, memory: ChunkMemory, name: str
) -> torch.Tensor | None:
    """The transformed filters [K, P, C, O] where this layer runs the compiled first-layer
    kernel's Winograd path (a build with one, a 3x3 layer with SHARED_WINOGRAD_MIN_CHANNELS or
    more whose 2x2 pool writes the per-model layout), else None."""
    kernel = slab_max_product_kernel() if plan.compiled and plan.pool_into_model else None
    if kernel is None or not kernel.winograd_positions or not compiled_kernels_may_run(weight):
        return None
    if weight.shape[2] < SHARED_WINOGRAD_MIN_CHANNELS:
        return None
    weight, pool = weight.contiguous(), math.isqrt(plan.slabs)
    out = memory.tensor(f"{name} filters", kernel.filters_shape(weight), weight)
    return kernel.winograd_filters(weight, plan.stride, plan.dilation, pool, out)


def runs_input_blocks(prepared: PreparedConv) -> bool:
    """Whether this convolution's kernel takes inputs in whole blocks of INPUT_BLOCK (the program
    pads the last chunk)."""
    return isinstance(prepared.plan, CompiledConv) or prepared.filters is not None


def kernel_description(prepared: PreparedConv) -> str:
    """Which kernel runs this convolution, in words: "compiled" for our C kernels (and their
    path), "torch" for torch's ops."""
    plan = prepared.plan
    if isinstance(plan, SharedInputConv):
        if prepared.filters is not None:  # [K, P, C, O]
            return f"compiled: {_winograd_name(prepared.filters.shape[1])} from the image"
        if plan.compiled:
            return "compiled: im2col product and max-pool"
        return "torch: im2col product" + (", max over the pool" if plan.slabs > 1 else "")
    if isinstance(plan, CompiledConv):
        kernel, kernel_size = model_conv_kernel(), (prepared.weight.shape[3], prepared.weight.shape[4])
        winograd = kernel is not None and kernel.takes_winograd(
            kernel_size, plan.stride, plan.dilation, plan.pool or 1
        )
        path = _winograd_name(kernel.winograd_positions) if kernel is not None and winograd else "direct"
        return f"compiled: {path} per model" + (" and max-pool" if plan.pool else "")
    if isinstance(plan, DenseConv):
        return "torch: dense product per model"
    return "torch: grouped conv2d"


def _winograd_name(positions: int) -> str:
    """F(mxm, 3x3) from a transformed filter's positions, (m + 2)^2."""
    side = math.isqrt(positions) - 2
    return f"Winograd F({side}x{side}, 3x3)"


def shared_input_conv(x: torch.Tensor, prepared: PreparedConv) -> torch.Tensor:
    """[n, H, W, C] shared by all models -> [n, Ho, Wo, K*out]; with pool slabs, the pool-ordered
    im2col that `pool_slabs` multiplies and pools in one step: [n*S*Ho*Wo, taps], or
    [taps, S, Ho*Wo*n] if plan.pool_into_model."""
    plan = prepared.plan
    assert isinstance(plan, SharedInputConv)
    n, positions = x.shape[0], plan.out_hw[0] * plan.out_hw[1]
    if prepared.filters is not None:  # the Winograd path reads the image as [C, H, W, n]
        image = prepared.memory.tensor(f"{prepared.name} image", (x.shape[3], x.shape[1], x.shape[2], n), x)
        return image.copy_(x.permute(3, 1, 2, 0))
    with_one = F.pad(x.reshape(n, -1), (0, 1), value=1.0)  # [n, H*W*C + 1]
    if plan.pool_into_model:
        # gathered from a contiguous [H*W*C + 1, n] (from the transposed view, the result came out
        # strided and cost a second copy) into chunk memory (fresh memory each chunk cost its
        # page faults: the gather took as long as half the convolution's kernel for CNN-s)
        image, index = with_one.T.contiguous(), plan.by_tap.view(-1)
        # the product with the filters saves the columns for backward when the filters need a
        # gradient: reused memory only when neither does (a later chunk or call would overwrite them)
        out = prepared.memory.out(f"{prepared.name} im2col", (index.shape[0], n), image, prepared.weight)
        columns = torch.index_select(image, 0, index, out=out)  # [taps * S*Ho*Wo, n]
        return columns.view(plan.columns.shape[1], plan.slabs, positions * n)
    columns = with_one[:, plan.columns].reshape(-1, plan.columns.shape[1])  # [n*S*Ho*Wo, taps]
    if plan.slabs > 1:
        return columns
    return _product(columns, prepared.weight, prepared).view(n, *plan.out_hw, -1)


def _product(a: torch.Tensor, b: torch.Tensor, prepared: PreparedConv) -> torch.Tensor:
    return torch.mm(a, b, out=prepared.memory.out(f"{prepared.name} product", (a.shape[0], b.shape[1]), a, b))


def pool_slabs(columns: torch.Tensor, prepared: PreparedConv, *, relu: bool = False) -> torch.Tensor:
    """The product of a pool-ordered shared-input convolution and the max-pool after it (and a
    ReLU after that, if `relu`): to [n, Ho, Wo, K*out], or to [K, out, Ho, Wo, n] if
    plan.pool_into_model."""
    plan, k = prepared.plan, prepared.models
    assert isinstance(plan, SharedInputConv)
    positions = plan.out_hw[0] * plan.out_hw[1]
    if not plan.pool_into_model:  # columns [n*S*Ho*Wo, taps] -> [n, S, Ho*Wo, K*out] -> [n, Ho, Wo, K*out]
        product = _product(columns, prepared.weight, prepared)
        pooled = _max_over_slabs(product.view(-1, plan.slabs, positions, product.shape[1]), prepared, relu)
        return pooled.view(pooled.shape[0], *plan.out_hw, pooled.shape[-1])
    if prepared.filters is not None:  # columns: the image [C, H, W, n]
        kernel, n = slab_max_product_kernel(), columns.shape[-1]
        assert kernel is not None
        shape = (k, prepared.weight.shape[1], *plan.out_hw, n)
        out = prepared.memory.tensor(f"{prepared.name} pool", shape, columns)
        floor = 0.0 if relu else float("-inf")
        return kernel.winograd(columns, prepared.filters, prepared.bias, out, floor=floor)
    # columns [taps, S, Ho*Wo*n] -> [K*out, Ho*Wo*n]
    weight, (taps, slabs, width) = prepared.weight, columns.shape
    # both contiguous by construction: the stacked filters, the gathered im2col
    fused = slab_max_product_kernel() if plan.compiled and compiled_kernels_may_run(weight, columns) else None
    if fused is not None:
        out = prepared.memory.tensor(f"{prepared.name} pool", (weight.shape[0], width), columns)
        pooled = fused(weight, columns, out, floor=0.0 if relu else float("-inf"))
    else:
        product = _product(weight, columns.view(taps, slabs * width), prepared)
        pooled = _max_over_slabs(product.view(-1, slabs, width), prepared, relu)
    return pooled.view(k, -1, *plan.out_hw, width // positions)


def _max_over_slabs(slabs: torch.Tensor, prepared: PreparedConv, relu: bool) -> torch.Tensor:
    """The max over axis 1, then the ReLU if asked (in place where autograd allows).

    Under autograd, max with its indices: its backward scatters the gradient to the winners,
    where amax's compares every element with the maximum again and divides among ties (1.5-2x
    the time of the whole pool step on CNN-s's first layer). A tie then sends the gradient to one
    slab instead of sharing it, as nn.MaxPool2d's backward does."""
    if not autograd_free(slabs):
        pooled = slabs.max(1).values
        return relu_gradient.relu(pooled) if relu else pooled
    shape = (slabs.shape[0], *slabs.shape[2:])
    pooled = torch.amax(slabs, 1, out=prepared.memory.out(f"{prepared.name} pool", shape, slabs))
    return torch.relu_(pooled) if relu else pooled


def dense_conv(x: torch.Tensor, prepared: PreparedConv) -> torch.Tensor:
    """[K, C, H, W, n] -> [K, out, Ho, Wo, n]."""
    plan = prepared.plan
    assert isinstance(plan, DenseConv)
    k, n = x.shape[0], x.shape[-1]
    flat = x.reshape(k, -1, n)
    weight, bias = prepared.weight, prepared.bias
    out = prepared.memory.out(prepared.name, (k, weight.shape[1], n), x, weight)
    if bias is None:
        out = torch.bmm(weight, flat, out=out)
    else:
        out = torch.baddbmm(bias, weight, flat, out=out)
    return out.view(k, -1, *plan.out_hw, n)


def compiled_conv(
    x: torch.Tensor, prepared: PreparedConv, *, pooled: bool = False, relu: bool = False
) -> torch.Tensor:
    """[K, C, H, W, n] -> [K, out, Ho, Wo, n], n a multiple of compiled_kernels.INPUT_BLOCK; `pooled`:
    with the plan's max-pool (and a ReLU after it, if `relu`)."""
    plan, kernel = prepared.plan, model_conv_kernel()
    assert isinstance(plan, CompiledConv) and kernel is not None
    pool = plan.pool if pooled and plan.pool else 1
    k, _, height, width, n = x.shape
    outs, kh, kw = prepared.weight.shape[1], prepared.weight.shape[3], prepared.weight.shape[4]
    (sh, sw), (dh, dw) = plan.stride, plan.dilation
    shape = (k, outs, _out_size(height, kh, sh, dh) // pool, _out_size(width, kw, sw, dw) // pool, n)
    out = prepared.memory.tensor(prepared.name, shape, x)
    floor = 0.0 if relu else float("-inf")
    return kernel(
        x.contiguous(),
        prepared.weight,
        prepared.bias,
        out,
        plan.stride,
        plan.dilation,
        pool=pool,
        floor=floor,
    )


def grouped_conv(x: torch.Tensor, prepared: PreparedConv, conv: nn.Conv2d) -> torch.Tensor:
    """[n, H, W, K*C] (the channels_last memory of [n, K*C, H, W]) -> [n, Ho, Wo, K*out]."""
    nchw = x.permute(0, 3, 1, 2)
    if not nchw.is_contiguous(memory_format=torch.channels_last):
        nchw = nchw.contiguous(memory_format=torch.channels_last)
    groups = prepared.models * conv.groups
    out = F.conv2d(nchw, prepared.weight, prepared.bias, conv.stride, conv.padding, conv.dilation, groups)
    return out.permute(0, 2, 3, 1)
