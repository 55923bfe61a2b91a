"""Run K weight sets of one architecture in one call.

This is the engine of zoo training (all models train at once) and of the behavioural loss (all
reconstructions of a batch run at once, differentiably with respect to their weights).

How: each architecture is compiled once into a *population program*, a list of steps read off
its `nn.Sequential` (conv, batchnorm, pool, activation, dropout, flatten, linear), and each of
its convolutions gets a kernel chosen from its shapes (population_convolution.py). The program
runs all K models on a few wide tensors instead of K narrow ones, in the memory layout the next
step wants (`_Activation`):

* the first convolution over inputs SHARED by all models is one matrix product with every
  model's filters side by side, over one im2col gathered once; its rows are ordered so that the
  max-pool after it is a max over contiguous slabs;
* small later convolutions (3x3 -> 2x2) are one dense matrix per model and one batched product;
  the others are one grouped convolution (groups = K) on the channels_last layout
  [n, H, W, K*C], where the models sit side by side on the channel axis;
* for calls no autograd graph records (evaluation, the service's jobs), two small C kernels
  (compiled_kernels.py) can replace the first convolution's product and pool, and the grouped
  convolutions with the pool after them: torch has nothing fast for either on the CPU they were
  tuned on. Each layer takes the kernel the autotune measured faster on this machine and at these
  shapes (`convolution_paths`, autotune.py), so a CPU where torch's ops win runs those;
* batchnorm, pooling, activations and dropout act per channel or elementwise, so per model by
  construction (dropout masks are drawn independently per model); max-pooling is a max of
  strided views, and a monotone activation before a pool runs after it, on a quarter of the
  values;
* flatten gives [K, n, C*H*W] (per model, nn.Flatten's order), and linear layers are one
  batched matmul over K;
* a zoo that mixes activations passes `activations` (one per model): the models are grouped by
  activation and each group runs its own activation's program (so the reorderings above still
  apply per group), the logits put back in model order.

Why it is fast on a CPU: one model's layers are tiny (8 channels), so a loop of nn.Module
forwards pays for many small, memory-bound kernels; the program turns them into a few large
matrix products, and walks the inputs in chunks sized so that a chunk's activations stay in
cache between layers rather than streaming gigabytes through main memory.

`population_forward_vmap` (torch.func vmap over functional_call on the nn.Module) is kept as
the reference implementation; the parity tests hold both to the plain nn.Module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from itertools import combinations
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn
from torch.func import functional_call, vmap

from zooscope.networks.architectures import ACTIVATION_NAMES, Architecture, activation_codes
from zooscope.networks.parameters import StackedParams, n_models, stack_state_dicts
from zooscope.population import autotune, relu_gradient
from zooscope.population.autotune import PathChoice
from zooscope.population.batching import spans, take, widest_activation
from zooscope.population.compiled_kernels import INPUT_BLOCK, built_library, cpu_identity, kernel_mode
from zooscope.population.convolution import (
    ChunkMemory,
    CompiledConv,
    ConvPlan,
    DenseConv,
    PreparedConv,
    SharedInputConv,
    autograd_free,
    compiled_conv,
    compiled_kernel_built,
    compiled_kernels_may_run,
    dense_conv,
    grouped_conv,
    kernel_description,
    plan_convolution,
    pool_slabs,
    prepare_convolution,
    runs_input_blocks,
    shared_input_conv,
)

# Floats the widest activation of one input chunk may hold (n * K * C * H * W): 32 MiB of float32.
# Smaller chunks keep more in cache but pay each step's fixed cost more often; on the development
# VM 2**23 was among the fastest for cnn_digits and CNN-s at 1000 inputs
# (`benchmarks/zoo_benchmarks.py --only chunks`, docs/benchmarks.md).
CHUNK_FLOATS = 2**23
# Inputs in a chunk are a multiple of this (16 float32 = one 64-byte cache line), so that rows of
# the per-model layout [K*C, H*W*n] start on a cache line and the compiled kernels' vector stores
# stay aligned (unaligned, they split across two lines, which measured slower).
CHUNK_ALIGNMENT = 16

StepKind = Literal["conv", "batchnorm", "pool", "elementwise", "dropout", "flatten", "linear"]


@dataclass(frozen=True)
class Step:
    """One layer of the population program."""

    kind: StepKind
    module: nn.Module  # supplies hyperparameters (stride, kernel, eps, p, the activation) only
    key: str = ""  # state_dict prefix of the layer's tensors, for layers that have any
    relu_after: bool = False  # pool steps: a ReLU that followed the pool runs inside it


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
    return tuple(_relu_into_pool(_pool_before_monotone_activation(steps)))


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


def _relu_into_pool(steps: list[Step]) -> list[Step]:
    """A ReLU right after a max-pool becomes part of the pool step: relu(max(a, b)) is
    max(0, a, b), which the compiled kernels compute for free, sparing a pass over the pooled
    activation."""
    out: list[Step] = []
    for step in steps:
        previous = out[-1] if out else None
        if type(step.module) is nn.ReLU and previous is not None and previous.kind == "pool":
            out[-1] = replace(previous, relu_after=True)
        else:
            out.append(step)
    return out


def population_forward(
    arch: Architecture,
    params: StackedParams,
    inputs: torch.Tensor,
    *,
    train: bool = False,
    chunk_size: int | None = None,
    activations: torch.Tensor | Sequence[str] | None = None,
) -> torch.Tensor:
    """Logits of K models: [K, N, n_classes].

    `params` is {key: [K, *shape]} (see parameters.py). `inputs` is either one batch shared by
    every model, [N, C, H, W], or one batch per model, [K, N, C, H, W]. With `train=True`
    dropout is active, drawn independently per model. BatchNorm always uses the running
    statistics carried in `params` (population training does not update them).
    `chunk_size` bounds memory by running that many models at a time.
    `activations` gives each model its own activation (a zoo that mixes them): [K] indices into
    ACTIVATION_NAMES (architectures.activation_codes) or K names; None runs every model with
    `arch.activation`. Models are grouped by activation and each group runs the program of its
    own activation, so a single-activation call is the same fast path as without it.
    Differentiable with respect to `params` (and `inputs`).
    """
    if activations is not None:
        return _forward_per_activation(arch, params, inputs, activations, train, chunk_size)
    if train and arch.batchnorm:
        raise ValueError("population training of BatchNorm architectures is not supported")
    shared = inputs.dim() == len(arch.input_shape) + 1
    k = n_models(params)
    if chunk_size is not None and chunk_size < k:
        blocks = []
        for s in spans(k, chunk_size):
            x = inputs if shared else inputs[s]
            blocks.append(_forward_all_inputs(arch, take(params, s), x, shared, train))
        return torch.cat(blocks)
    return _forward_all_inputs(arch, params, inputs, shared, train)


def _forward_per_activation(
    arch: Architecture,
    params: StackedParams,
    inputs: torch.Tensor,
    activations: torch.Tensor | Sequence[str],
    train: bool,
    chunk_size: int | None,
) -> torch.Tensor:
    """population_forward with one activation per model: one call per activation group, the
    logits put back in model order (index_select, so gradients flow to every group)."""
    codes = (
        activations.cpu().long() if isinstance(activations, torch.Tensor) else activation_codes(activations)
    )
    k = n_models(params)
    if codes.shape != (k,):
        raise ValueError(f"activations: expected one per model ({k}), got shape {tuple(codes.shape)}")
    groups = sorted(set(codes.tolist()))
    if not all(0 <= code < len(ACTIVATION_NAMES) for code in groups):
        raise ValueError(f"activation codes must index ACTIVATION_NAMES {ACTIVATION_NAMES}, got {groups}")
    if len(groups) == 1:
        own = arch.with_activation(ACTIVATION_NAMES[groups[0]])
        return population_forward(own, params, inputs, train=train, chunk_size=chunk_size)
    shared = inputs.dim() == len(arch.input_shape) + 1
    device = next(iter(params.values())).device
    blocks, order = [], []
    for code in groups:
        members = (codes == code).nonzero().squeeze(1)
        index = members.to(device)
        sub = {key: value.index_select(0, index) for key, value in params.items()}
        x = inputs if shared else inputs.index_select(0, index.to(inputs.device))
        own = arch.with_activation(ACTIVATION_NAMES[code])
        blocks.append(population_forward(own, sub, x, train=train, chunk_size=chunk_size))
        order.append(members)
    position = torch.empty(k, dtype=torch.long)
    position[torch.cat(order)] = torch.arange(k)
    logits = torch.cat(blocks)
    return logits.index_select(0, position.to(logits.device))


def _forward_all_inputs(
    arch: Architecture, params: StackedParams, inputs: torch.Tensor, shared: bool, train: bool
) -> torch.Tensor:
    """The program over input chunks sized by CHUNK_FLOATS; logits [K, N, classes]."""
    k = n_models(params)
    n_inputs = inputs.shape[0] if shared else inputs.shape[1]
    memory = _chunk_memory()
    convs = _call_convolutions(arch, params, inputs, shared, memory)
    # the compiled convolution runs blocks of 16 inputs: chunks of whole blocks, the last padded
    lanes = INPUT_BLOCK if any(runs_input_blocks(conv) for conv in convs.values()) else 1
    step = inputs_per_chunk(arch, k, multiple_of=lanes)

    def run(chunk: torch.Tensor) -> torch.Tensor:  # [K, classes, n]
        n = chunk.shape[0] if shared else chunk.shape[1]
        if n % lanes:
            padding = (0, 0) * (chunk.dim() - (1 if shared else 2)) + (0, lanes - n % lanes)
            return _run_program(arch, params, convs, memory, F.pad(chunk, padding), shared, train)[..., :n]
        return _run_program(arch, params, convs, memory, chunk, shared, train)

    if step >= n_inputs:
        return run(inputs).transpose(1, 2).contiguous()
    outputs = [
        run(inputs[start : start + step] if shared else inputs[:, start : start + step])
        for start in range(0, n_inputs, step)
    ]
    # [K, classes, n] chunks -> [K, N, classes]: the transpose happens in cat's one copy
    return torch.cat([logits.transpose(1, 2) for logits in outputs], dim=1)


def _call_convolutions(
    arch: Architecture, params: StackedParams, inputs: torch.Tensor, shared: bool, memory: ChunkMemory
) -> dict[str, PreparedConv]:
    """The convolutions of a call, each on the kernel the call runs it on, weights prepared."""
    compiled: frozenset[str] = frozenset()
    if compiled_kernels_may_run(*params.values(), inputs):
        n_inputs = inputs.shape[0] if shared else inputs.shape[1]
        compiled = convolution_paths(arch, n_models(params), n_inputs, shared=shared).compiled
    plans = _convolution_plans(arch, shared, str(inputs.device), compiled)
    return _prepared_convolutions(plans, params, memory)


def convolution_kernels(arch: Architecture, params: StackedParams, inputs: torch.Tensor) -> dict[str, str]:
    """What population_forward(arch, params, inputs) runs each convolution on, by state_dict
    prefix in forward order: the kernel and, for a compiled one, its path (direct, im2col
    product or Winograd), as the call would choose them in the same autograd context
    (convolution.kernel_description)."""
    shared = inputs.dim() == len(arch.input_shape) + 1
    convs = _call_convolutions(arch, params, inputs, shared, ChunkMemory())
    return {key: kernel_description(conv) for key, conv in convs.items()}


def inputs_per_chunk(arch: Architecture, k: int, *, multiple_of: int = 1) -> int:
    """How many inputs the program runs at a time for K models: CHUNK_FLOATS for the widest
    activation, rounded down to a multiple of CHUNK_ALIGNMENT when there are many, and to a
    multiple of `multiple_of` (at least one multiple) always."""
    step = max(1, CHUNK_FLOATS // (k * widest_activation(arch)))
    if step >= 4 * CHUNK_ALIGNMENT:  # where rounding costs at most a fifth of the chunk
        step -= step % CHUNK_ALIGNMENT
    return max(multiple_of, step - step % multiple_of)


def convolution_paths(arch: Architecture, models: int, inputs: int, *, shared: bool = True) -> PathChoice:
    """Which convolutions (state_dict prefixes) a call on `models` models and `inputs` inputs (one
    batch `shared` by all models, or one per model) runs on a compiled kernel when the kernels
    may serve it (float32, CPU, no autograd graph), and on what that rests: torch's ops where
    ZOOSCOPE_COMPILED_KERNELS=0 or no kernel is built, every kernel that can run with =1, and by
    default the autotune's choice (autotune.py), timed at `tuning_shape`: each convolution on its
    compiled kernel or on torch's ops, every combination that runs differently."""
    mode = kernel_mode()
    available = frozenset() if mode == "torch" else _compilable_layers(arch, shared)
    if not available:
        return PathChoice(frozenset(), "torch", path_label(arch, frozenset()))
    if mode == "compiled":
        return PathChoice(available, "forced", path_label(arch, available))
    k, n = tuning_shape(arch, models, inputs)
    candidates = _path_candidates(arch, shared, available)
    identity = {
        "architecture": arch,
        "shared": shared,
        "models": k,
        "inputs": n,
        "kernels": _kernel_builds(arch, shared, available),
        "cpu": cpu_identity(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    chunk = _TimedChunk(arch, shared, k, n)
    reference = path_label(arch, frozenset())
    return autotune.choose(identity, candidates, chunk.runner, reference=reference, models=k, inputs=n)


def tuning_shape(arch: Architecture, models: int, inputs: int) -> tuple[int, int]:
    """The (models, inputs) the autotune times a call at: the largest power of two of models up to
    `models`, and one chunk of the largest power of two of inputs (at least INPUT_BLOCK) that the
    call's chunks hold. Calls of similar sizes share a decision, and the timing never needs
    more memory than the call."""
    k = 1 << (max(models, 1).bit_length() - 1)
    per_chunk = min(
        -(-max(inputs, 1) // INPUT_BLOCK) * INPUT_BLOCK,
        inputs_per_chunk(arch, models, multiple_of=INPUT_BLOCK),
    )
    return k, max(INPUT_BLOCK, 1 << (per_chunk.bit_length() - 1))


def path_label(arch: Architecture, compiled: frozenset[str]) -> str:
    """One letter per convolution of `arch`, in forward order: C compiled, T torch's ops."""
    return "".join("C" if key in compiled else "T" for key in _conv_keys(arch))


@lru_cache(maxsize=32)
def _conv_keys(arch: Architecture) -> tuple[str, ...]:
    return tuple(step.key for step in population_program(arch) if step.kind == "conv")


def _runs_compiled(plan: ConvPlan) -> bool:
    return isinstance(plan, CompiledConv) or (isinstance(plan, SharedInputConv) and plan.compiled)


def _compilable_layers(arch: Architecture, shared: bool) -> frozenset[str]:
    """The convolutions that could run a compiled kernel here: built, and of a shape it takes."""
    plans = _convolution_plans(arch, shared, "cpu", frozenset(_conv_keys(arch)))
    return frozenset(key for key, plan in plans.items() if compiled_kernel_built(plan))


@lru_cache(maxsize=64)
def _path_candidates(
    arch: Architecture, shared: bool, available: frozenset[str]
) -> dict[str, frozenset[str]]:
    """Label -> the layers compiled, for every subset of `available` that runs differently (a
    shared-input layer runs compiled only when its pool writes the per-model layout, which
    depends on the next convolution)."""
    candidates: dict[str, frozenset[str]] = {}
    for size in range(len(available) + 1):
        for subset in combinations(sorted(available), size):
            plans = _convolution_plans(arch, shared, "cpu", frozenset(subset))
            runs = frozenset(key for key, plan in plans.items() if _runs_compiled(plan))
            candidates.setdefault(path_label(arch, runs), runs)
    return candidates


def _kernel_builds(arch: Architecture, shared: bool, available: frozenset[str]) -> tuple[str, ...]:
    """The file names of the kernels the candidates run (each names its source, compiler, flags, CPU)."""
    plans = _convolution_plans(arch, shared, "cpu", available)
    names = {
        "model_conv" if isinstance(plan, CompiledConv) else "slab_max_product"
        for key, plan in plans.items()
        if key in available
    }
    builds = (built_library(name) for name in sorted(names))
    return tuple(path.name for path in builds if path is not None)


class _TimedChunk:
    """One chunk of inputs on stand-in weights (the module's initial ones, alike for every model:
    the kernels' speed does not depend on the values), made at the first runner's call and
    shared by the autotune's candidates."""

    def __init__(self, arch: Architecture, shared: bool, models: int, inputs: int) -> None:
        self.arch, self.shared, self.models, self.inputs = arch, shared, models, inputs

    @cached_property
    def _data(self) -> tuple[StackedParams, torch.Tensor, ChunkMemory]:
        arch, k = self.arch, self.models
        one = stack_state_dicts(arch, [arch.build().state_dict()])
        params = {key: value.expand(k, *value.shape[1:]).contiguous() for key, value in one.items()}
        batch = (self.inputs, *arch.input_shape) if self.shared else (k, self.inputs, *arch.input_shape)
        return params, torch.randn(batch, generator=torch.Generator().manual_seed(0)), ChunkMemory()

    def runner(self, compiled: frozenset[str]) -> Callable[[], torch.Tensor]:
        params, x, memory = self._data
        with torch.no_grad():
            plans = _convolution_plans(self.arch, self.shared, "cpu", compiled)
            convs = _prepared_convolutions(plans, params, memory)

        def run() -> torch.Tensor:
            with torch.no_grad():
                return _run_program(self.arch, params, convs, memory, x, self.shared, False)

        return run


_THREAD_STATE = threading.local()


def _chunk_memory() -> ChunkMemory:
    """This thread's chunk memory, kept from call to call: each call's first chunk would otherwise
    fault its pages in again. It holds about twice the largest chunk activation seen so far
    (CHUNK_FLOATS floats, 32 MiB, unless a single input of the population needs more)."""
    memory = getattr(_THREAD_STATE, "chunk_memory", None)
    if memory is None:
        memory = _THREAD_STATE.chunk_memory = ChunkMemory()
    return memory


def _prepared_convolutions(
    plans: dict[str, ConvPlan], params: StackedParams, memory: ChunkMemory
) -> dict[str, PreparedConv]:
    """Each convolution's weights in its kernel's form, once per call rather than once per chunk."""
    return {
        key: prepare_convolution(plan, params[f"{key}.weight"], params.get(f"{key}.bias"), memory, key)
        for key, plan in plans.items()
    }


@lru_cache(maxsize=256)
def _convolution_plans(
    arch: Architecture, shared: bool, device: str, compiled: frozenset[str] = frozenset()
) -> dict[str, ConvPlan]:
    """The kernel of every convolution (population_convolution.py), keyed by its state_dict prefix;
    `compiled`: the convolutions that may run a compiled kernel in this call (convolution_paths)."""
    # plans are cached: index tensors made inside inference_mode could not serve a later call
    # that autograd records (an inference tensor cannot be saved for backward)
    with torch.inference_mode(False), torch.no_grad():
        steps = population_program(arch)
        plans = {key: _layer_plan(arch, shared, key, key in compiled) for key in _conv_keys(arch)}
        # a pool-ordered convolution's pool writes the per-model layout when its next consumer
        # wants it
        for index, step in enumerate(steps):
            plan = plans.get(step.key)
            if isinstance(plan, SharedInputConv) and plan.slabs > 1:
                following = steps[index + 2 :]
                consumer = next((s for s in following if s.kind in ("conv", "flatten", "linear")), None)
                wants_model = (
                    consumer is None
                    or consumer.kind != "conv"
                    or isinstance(plans[consumer.key], DenseConv | CompiledConv)
                )
                compiled_pool = wants_model and step.key in compiled
                plans[step.key] = replace(plan, pool_into_model=wants_model, compiled=compiled_pool)
        return {key: _plan_on(plan, device) for key, plan in plans.items()}


@lru_cache(maxsize=256)
def _layer_plan(arch: Architecture, shared: bool, key: str, compiled: bool) -> ConvPlan:
    """One convolution's plan (plan_convolution), made once for all the sets of compiled layers
    that share it: its index tensors take a while to build."""
    conv, in_chw, shared_here, pooled_by = _conv_inputs(arch, shared)[key]
    with torch.inference_mode(False), torch.no_grad():
        return plan_convolution(conv, in_chw, shared=shared_here, pooled_by=pooled_by, compiled=compiled)


@lru_cache(maxsize=64)
def _conv_inputs(
    arch: Architecture, shared: bool
) -> dict[str, tuple[nn.Conv2d, tuple[int, int, int], bool, int | None]]:
    """Each convolution's module, input shape (C, H, W), whether its input is still shared by
    every model, and the window of the max-pool right after it (None: no pool), by key."""
    with torch.inference_mode(False), torch.no_grad():
        steps = population_program(arch)
        inputs = {}
        probe = torch.zeros(1, *arch.input_shape)
        model_axis = not shared  # until the first layer with weights, shared inputs have none
        for index, step in enumerate(steps):
            module = step.module
            if step.kind == "conv":
                assert isinstance(module, nn.Conv2d)
                pooled_by = _pool_window(steps[index + 1]) if index + 1 < len(steps) else None
                inputs[step.key] = (
                    module,
                    (probe.shape[1], probe.shape[2], probe.shape[3]),
                    not model_axis,
                    pooled_by,
                )
            model_axis = model_axis or step.kind in ("conv", "dropout", "batchnorm", "linear")
            probe = module.eval()(probe)
        return inputs


def _pool_window(step: Step) -> int | None:
    """The kernel of a max-pool step that is a max over kernel x kernel slabs (stride = kernel)."""
    if step.kind != "pool":
        return None
    assert isinstance(step.module, nn.MaxPool2d)
    window = _pool_as_strided_max(step.module)
    return window[0] if window is not None and window[0] == window[1] else None


def _plan_on(plan: ConvPlan, device: str) -> ConvPlan:
    if isinstance(plan, SharedInputConv):
        return replace(plan, columns=plan.columns.to(device))
    if isinstance(plan, DenseConv):
        return replace(plan, entries=plan.entries.to(device))
    return plan


Layout = Literal["shared", "wide", "slabs", "model", "flat"]


@dataclass(frozen=True)
class _Activation:
    """One input chunk's activation and the memory layout it is in (K models, n inputs).

    shared: [n, H, W, C], one tensor for every model (before the first layer with weights);
    wide:   [n, H, W, K*C], the models side by side on the channel axis: the channels_last memory
            of the grouped-convolution shape [n, K*C, H, W];
    slabs:  a pending convolution whose max-pool follows, run by the pool step with the pool:
            a shared-input convolution's im2col, ordered by offset inside the pool window
            (population_convolution.pool_slabs runs the product and a max over the slabs), or
            a compiled convolution's input in the model layout (compiled_conv with the pool);
    model:  [K, C, H, W, n], one matrix [features, inputs] per model, as batched products want
            it: a flatten is free (nn.Flatten's (C, H, W) order) and linear layers are W @ x;
    flat:   [K, F, n], after flatten.
    """

    tensor: torch.Tensor
    layout: Layout
    k: int
    conv: PreparedConv | None = None  # slabs only: the convolution whose pool is pending

    def replaced(self, tensor: torch.Tensor) -> _Activation:
        return _Activation(tensor, self.layout, self.k, self.conv)

    def with_model_axis(self) -> _Activation:
        if self.layout != "shared":
            return self
        t = self.tensor
        return _Activation(t.unsqueeze(3).expand(*t.shape[:3], self.k, t.shape[3]).flatten(3), "wide", self.k)

    def as_wide(self) -> _Activation:
        h = self.with_model_axis()
        if h.layout == "model":  # [K, C, H, W, n] -> [n, H, W, K*C]
            h = _Activation(h.tensor.permute(4, 2, 3, 0, 1).flatten(3), "wide", self.k)
        assert h.layout == "wide", h.layout
        return h

    def as_model(self) -> torch.Tensor:
        """[K, C, H, W, n] (a view where it can be)."""
        h = self.with_model_axis()
        if h.layout == "model":
            return h.tensor
        assert h.layout == "wide", h.layout
        n, height, width, kc = h.tensor.shape
        return h.tensor.view(n, height, width, self.k, kc // self.k).permute(3, 4, 1, 2, 0)

    def per_channel_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> _Activation:
        """x * scale + shift with one (scale, shift) per model and channel, both [K, C]."""
        h = self.with_model_axis()
        if h.layout == "model":
            shape = (self.k, scale.shape[1], 1, 1, 1)
            return h.replaced(torch.addcmul(shift.view(shape), h.tensor, scale.view(shape)))
        return h.replaced(torch.addcmul(shift.reshape(-1), h.tensor, scale.reshape(-1)))

    def max_pooled(self, pool: nn.MaxPool2d, *, relu_after: bool = False) -> _Activation:
        if self.layout == "slabs" and self.conv is not None and isinstance(self.conv.plan, CompiledConv):
            return _Activation(
                compiled_conv(self.tensor, self.conv, pooled=True, relu=relu_after), "model", self.k
            )
        if self.layout == "slabs":
            assert self.conv is not None and isinstance(self.conv.plan, SharedInputConv)
            layout: Layout = "model" if self.conv.plan.pool_into_model else "wide"
            return _Activation(pool_slabs(self.tensor, self.conv, relu=relu_after), layout, self.k)
        pooled = self._max_pooled(pool)
        return pooled.replaced(_activate(_RELU, pooled)) if relu_after else pooled

    def _max_pooled(self, pool: nn.MaxPool2d) -> _Activation:
        window = _pool_as_strided_max(pool)
        if window is not None and self.layout in ("shared", "wide", "model"):
            return self.replaced(_strided_max(self.tensor, *window))
        h = self.as_wide()
        nchw = h.tensor.permute(0, 3, 1, 2)
        pooled = F.max_pool2d(
            nchw, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode
        )
        return h.replaced(pooled.permute(0, 2, 3, 1))

    def flattened(self) -> _Activation:
        """[K, C*H*W, n], each model's features in nn.Flatten's (C, H, W) order."""
        t = self.as_model()
        return _Activation(t.reshape(self.k, -1, t.shape[-1]), "flat", self.k)


def _pool_as_strided_max(pool: nn.MaxPool2d) -> tuple[int, int] | None:
    """(kernel, stride) for a square pool without padding, dilation or ceil mode, else None."""
    kernel, stride = _square(pool.kernel_size), _square(pool.stride)
    if kernel is None or stride is None or _square(pool.padding) != 0 or _square(pool.dilation) != 1:
        return None
    return None if pool.ceil_mode else (kernel, stride)


def _square(value: int | tuple[int, ...]) -> int | None:
    if isinstance(value, int):
        return value
    return value[0] if len(set(value)) == 1 else None


def _strided_max(t: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Max-pool over the dims -3, -2 (H, W) of a channels-last tensor: a max of strided views,
    each walking the contiguous channel axis (several times faster than max_pool2d here)."""
    height, width = t.shape[-3], t.shape[-2]
    out_h, out_w = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    pooled = None
    for a in range(kernel):
        for b in range(kernel):
            view = t[
                ..., a : a + stride * (out_h - 1) + 1 : stride, b : b + stride * (out_w - 1) + 1 : stride, :
            ]
            pooled = view if pooled is None else torch.maximum(pooled, view)
    assert pooled is not None
    return pooled


def _convolve(h: _Activation, prepared: PreparedConv, conv: nn.Conv2d) -> _Activation:
    plan, k = prepared.plan, h.k
    if isinstance(plan, SharedInputConv):
        assert h.layout == "shared", h.layout
        out = shared_input_conv(h.tensor, prepared)
        return _Activation(out, "slabs", k, prepared) if plan.slabs > 1 else _Activation(out, "wide", k)
    if isinstance(plan, DenseConv):
        return _Activation(dense_conv(h.as_model(), prepared), "model", k)
    if isinstance(plan, CompiledConv):
        if plan.pool:  # the pool step runs the convolution and the pool together
            return _Activation(h.as_model(), "slabs", k, prepared)
        return _Activation(compiled_conv(h.as_model(), prepared), "model", k)
    return _Activation(grouped_conv(h.as_wide().tensor, prepared, conv), "wide", k)


_RELU = nn.ReLU()
# In-place forms of the activations, for activations no autograd graph holds on to.
_IN_PLACE = {nn.ReLU: torch.relu_, nn.Tanh: torch.tanh_, nn.Sigmoid: torch.sigmoid_}


def _activate(module: nn.Module, h: _Activation) -> torch.Tensor:
    in_place = _IN_PLACE.get(type(module))
    # a tensor the program made itself (never the caller's input) and that no backward needs
    if in_place is not None and h.layout != "shared" and autograd_free(h.tensor):
        return in_place(h.tensor)
    if type(module) is nn.ReLU:
        return relu_gradient.relu(h.tensor)  # torch's, unless a caller asked for a leaky backward
    return module(h.tensor)


def _batchnorm_affine(params: StackedParams, key: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as x * scale + shift, from the running statistics: ([K, C], [K, C])."""
    scale = params[f"{key}.weight"] * torch.rsqrt(params[f"{key}.running_var"] + eps)
    return scale, params[f"{key}.bias"] - params[f"{key}.running_mean"] * scale


def _run_program(
    arch: Architecture,
    params: StackedParams,
    convs: dict[str, PreparedConv],
    memory: ChunkMemory,
    x: torch.Tensor,
    shared: bool,
    train: bool,
) -> torch.Tensor:
    """All K models on one chunk of inputs: [n, C, H, W] shared or [K, n, C, H, W] -> [K, classes, n]."""
    k = n_models(params)
    if shared:
        h = _Activation(x.permute(0, 2, 3, 1), "shared", k)  # [n, H, W, C]: no model axis yet
    else:
        h = _Activation(x.permute(1, 3, 4, 0, 2).flatten(3), "wide", k)  # [n, H, W, K*C]
    steps = population_program(arch)
    for index, step in enumerate(steps):
        module = step.module
        if step.kind == "conv":
            assert isinstance(module, nn.Conv2d)
            h = _convolve(h, convs[step.key], module)
        elif step.kind == "batchnorm":
            assert isinstance(module, nn.BatchNorm2d)
            h = h.per_channel_affine(*_batchnorm_affine(params, step.key, module.eps))
        elif step.kind == "pool":
            assert isinstance(module, nn.MaxPool2d)
            h = h.max_pooled(module, relu_after=step.relu_after)
        elif step.kind == "elementwise":
            h = h.replaced(_activate(module, h))
        elif step.kind == "dropout":
            assert isinstance(module, nn.Dropout)
            # a mask drawn before the model axis exists would be shared by all models
            h = h.with_model_axis()
            h = h.replaced(F.dropout(h.tensor, module.p, train))
        elif step.kind == "flatten":
            h = h.flattened()
        else:  # linear, h: [K, in, n]
            w = params[f"{step.key}.weight"]  # [K, out, in]
            b = params.get(f"{step.key}.bias")
            x_in = h.tensor
            # a hidden layer's output lives in chunk memory until the next chunk; the logits do not
            last = index == len(steps) - 1
            out = None if last else memory.out(step.key, (w.shape[0], w.shape[1], x_in.shape[-1]), x_in, w)
            t = torch.bmm(w, x_in, out=out) if b is None else torch.baddbmm(b.unsqueeze(2), w, x_in, out=out)
            h = h.replaced(t)
    if steps[-1].kind != "linear":  # a result must not stay in chunk memory
        return h.flattened().tensor.clone()
    return h.tensor  # [K, classes, n]


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
