"""The compiled kernels, built for each vector width: their results against torch's ops, and the
fallback to torch's ops when they cannot be had."""

from __future__ import annotations

import ctypes
import logging
import shutil
from collections.abc import Iterator
from functools import cache

import pytest
import torch

from zooscope.networks.architectures import Architecture, initialise
from zooscope.networks.parameters import stack_state_dicts
from zooscope.population import compiled_kernels
from zooscope.population import convolution as population_convolution
from zooscope.population.compiled_kernels import ModelConv, SlabMaxProduct, slab_max_product_kernel
from zooscope.population.forward import convolution_kernels, module_forward, population_forward
from zooscope.population.kernel_cache import CACHE_ENV

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
# the vector widths the kernels are built for: 16 floats with AVX-512, 8 without (a CPU runs
# both: code built for the narrower one, or for pairs of its registers)
WIDTHS = pytest.mark.parametrize("lanes", [16, 8], ids=lambda lanes: f"{lanes}-lanes")


# every build of each kernel that may run here (compiled_kernels.kernel_variant)
def _variants(name: str) -> pytest.MarkDecorator:
    variants = [tuple(variant.items()) for variant in compiled_kernels.BUILD_VARIANTS[name]]
    return pytest.mark.parametrize(
        "variant", variants, ids=lambda variant: "-".join(f"{key}{value}" for key, value in variant)
    )


SLAB_VARIANTS, MODEL_CONV_VARIANTS = _variants("slab_max_product"), _variants("model_conv")


@cache
def _kernel_at(
    name: str, lanes: int, variant: tuple[tuple[str, int], ...] = ()
) -> SlabMaxProduct | ModelConv:
    library = ctypes.CDLL(str(compiled_kernels.build(name, lanes, dict(variant))))
    return SlabMaxProduct(library) if name == "slab_max_product" else ModelConv(library)


class _Counted:
    """A compiled kernel that records each call, (method, its pool), and passes it on."""

    def __init__(self, kernel: SlabMaxProduct | ModelConv) -> None:
        self.kernel, self.calls = kernel, []

    def __call__(self, *args, **kwargs):
        self.calls.append(("call", kwargs.get("pool", 1)))
        return self.kernel(*args, **kwargs)

    def winograd(self, *args, **kwargs):
        self.calls.append(("winograd", 2))
        assert isinstance(self.kernel, SlabMaxProduct)
        return self.kernel.winograd(*args, **kwargs)

    def __getattr__(self, name: str):  # winograd_positions, takes_winograd, winograd_filters, ...
        return getattr(self.kernel, name)


@pytest.fixture
def compiled_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """ZOOSCOPE_COMPILED_KERNELS=1: every compiled kernel that can run does (no autotune)."""
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "1")


@pytest.fixture
def fresh_kernel_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The kernel built (or not) afresh under the test's environment, and forgotten after it."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "kernels"))
    compiled_kernels.forget_kernels()
    yield
    compiled_kernels.forget_kernels()


def _reference(weight: torch.Tensor, columns: torch.Tensor, floor: float) -> torch.Tensor:
    taps, slabs, width = columns.shape
    product = (weight @ columns.reshape(taps, -1)).view(-1, slabs, width)
    return torch.clamp_min(product.amax(1), floor) if floor == 0 else product.amax(1)


@needs_compiler
@pytest.mark.parametrize(
    "rows, taps, slabs, width",
    [
        (1024, 10, 4, 1017),  # cnn_digits: 128 models x 8 channels, 3x3 taps + bias, 2x2 pool
        (1024, 10, 4, 1024),  # whole vectors only
        (13, 26, 4, 37),  # rows that leave a partial block, a partial vector of columns
        (8, 3, 1, 5),  # one slab (no pool), fewer columns than one vector
        (5, 7, 9, 16),  # a 3x3 pool, fewer rows than one block
    ],
)
@pytest.mark.parametrize("floor", [float("-inf"), 0.0])
@WIDTHS
@SLAB_VARIANTS
def test_kernel_matches_product_then_max(
    rows: int,
    taps: int,
    slabs: int,
    width: int,
    floor: float,
    lanes: int,
    variant: tuple[tuple[str, int], ...],
) -> None:
    kernel = _kernel_at("slab_max_product", lanes, variant)
    assert isinstance(kernel, SlabMaxProduct)
    generator = torch.Generator().manual_seed(rows + width)
    weight = torch.randn(rows, taps, generator=generator)
    columns = torch.randn(taps, slabs, width, generator=generator)
    out = torch.full((rows, width), 123.0)
    kernel(weight, columns, out, floor=floor)
    torch.testing.assert_close(out, _reference(weight, columns, floor), atol=1e-5, rtol=1e-5)


@needs_compiler
@WIDTHS
@SLAB_VARIANTS
def test_kernel_propagates_nan_like_torch(lanes: int, variant: tuple[tuple[str, int], ...]) -> None:
    kernel = _kernel_at("slab_max_product", lanes, variant)
    assert isinstance(kernel, SlabMaxProduct)
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(24, 10, generator=generator)
    columns = torch.randn(10, 4, 40, generator=generator)
    weight[5, 2] = float("nan")  # a diverged model's filter: its whole row is NaN
    columns[1, 3, 17] = float("nan")  # one bad input value: one column, in the last slab only
    out = torch.empty(24, 40)
    kernel(weight, columns, out, floor=0.0)
    expected = _reference(weight, columns, 0.0)
    assert torch.equal(torch.isnan(out), torch.isnan(expected))
    assert torch.isnan(out[5]).all() and torch.isnan(out[:, 17]).all()
    torch.testing.assert_close(out.nan_to_num(), expected.nan_to_num(), atol=1e-5, rtol=1e-5)


@needs_compiler
def test_kernel_refuses_tensors_it_cannot_read_safely() -> None:
    kernel = slab_max_product_kernel()
    assert kernel is not None
    weight, columns = torch.randn(16, 10), torch.randn(10, 4, 32)
    with pytest.raises(ValueError, match="contiguous float32"):
        kernel(weight.double(), columns.double(), torch.empty(16, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous float32"):
        kernel(weight, columns, torch.empty(32, 16).T)
    with pytest.raises(ValueError, match="disagree"):
        kernel(weight, columns, torch.empty(16, 31))


def _digits_case(seed: int) -> tuple[Architecture, list[dict[str, torch.Tensor]], torch.Tensor]:
    arch = Architecture("cnn_digits", 1, 8)
    generator = torch.Generator().manual_seed(seed)
    state_dicts = []
    for _ in range(3):
        module = arch.build()
        initialise(module, "kaiming_uniform", generator)
        state_dicts.append(module.state_dict())
    return arch, state_dicts, torch.randn(40, 1, 8, 8, generator=generator)


@needs_compiler
@pytest.mark.usefixtures("compiled_everywhere")
def test_population_forward_uses_the_kernel_and_keeps_a_diverged_model_nan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arch, state_dicts, x = _digits_case(seed=4)
    state_dicts[1]["module_list.0.weight"][0, 0, 0, 0] = float("nan")
    params = stack_state_dicts(arch, state_dicts)
    kernel = slab_max_product_kernel()
    assert kernel is not None
    counted = _Counted(kernel)
    monkeypatch.setattr(population_convolution, "slab_max_product_kernel", lambda: counted)
    with torch.inference_mode():
        logits = population_forward(arch, params, x)
    assert counted.calls, "an inference forward of cnn_digits runs its first layer in the compiled kernel"
    for i, state_dict in enumerate(state_dicts):
        expected = module_forward(arch, state_dict, x)
        assert torch.equal(torch.isnan(logits[i]), torch.isnan(expected))
        torch.testing.assert_close(logits[i].nan_to_num(), expected.nan_to_num(), atol=1e-5, rtol=1e-5)
    assert torch.isnan(logits[1]).all()


# the builds of the first-layer kernel with a Winograd path for 3x3 layers and a 2x2 pool
SHARED_WINOGRAD_VARIANTS = pytest.mark.parametrize(
    "variant",
    [tuple(v.items()) for v in compiled_kernels.BUILD_VARIANTS["slab_max_product"] if v.get("WINOGRAD")],
    ids=lambda variant: "-".join(f"{key}{value}" for key, value in variant),
)


def _assert_nan_as_the_direct_sum(
    out: torch.Tensor, expected: torch.Tensor, variant: tuple[tuple[str, int], ...]
) -> None:
    """NaN wherever the direct sum has it. On F(4x4, 3x3) a NaN input reaches every pooled output
    of a block whose 6x6 patch holds it, where the direct sum reaches only the pool windows that
    see it: more NaN, but only in the same inputs (docs/internals.md)."""
    got, wanted = torch.isnan(out), torch.isnan(expected)
    if dict(variant).get("WINOGRAD", 0) != 2:
        assert torch.equal(got, wanted)
        return
    assert (got | ~wanted).all(), "every NaN of the direct sum"
    extra_inputs = (got & ~wanted).flatten(0, -2).any(0)
    assert (~extra_inputs | wanted.flatten(0, -2).any(0)).all(), "extra NaN only in inputs that have NaN"


def _shared_winograd_case(
    models: int, channels: int, size: int, n: int, outs: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(channels, size, size, n, generator=generator)
    weight = torch.randn(models, outs, channels, 3, 3, generator=generator)
    return image, weight, torch.randn(models, outs, generator=generator)


def _shared_reference(
    image: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool
) -> torch.Tensor:
    every_model = image.unsqueeze(0).expand(weight.shape[0], *image.shape).contiguous()
    return _grouped_reference(every_model, weight, bias, 1, 1, 2, relu)


@needs_compiler
@pytest.mark.parametrize(
    "models, channels, size, n, outs",
    [
        (4, 3, 32, 16, 16),  # CNN3's first layer: a 15x15 pooled map, odd
        (3, 1, 8, 32, 8),  # cnn_digits' first layer: 3x3 pooled
        (2, 2, 14, 16, 5),  # 6x6 pooled: whole F(4x4, 3x3) blocks
        (3, 3, 7, 16, 2),  # 2x2 pooled from a 7-wide map (the pool drops a border)
        (2, 2, 4, 16, 3),  # one pooled output from a 4x4 map
    ],
)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@WIDTHS
@SHARED_WINOGRAD_VARIANTS
def test_shared_winograd_matches_convolution_then_pool(
    models: int,
    channels: int,
    size: int,
    n: int,
    outs: int,
    with_bias: bool,
    relu: bool,
    lanes: int,
    variant: tuple[tuple[str, int], ...],
) -> None:
    kernel = _kernel_at("slab_max_product", lanes, variant)
    assert isinstance(kernel, SlabMaxProduct)
    image, weight, bias = _shared_winograd_case(models, channels, size, n, outs, seed=size + n)
    filters = kernel.winograd_filters(weight, (1, 1), (1, 1), 2)
    assert filters is not None
    pooled = (size - 2) // 2
    out = torch.full((models, outs, pooled, pooled, n), 123.0)
    given_bias = bias if with_bias else None
    kernel.winograd(image, filters, given_bias, out, floor=0.0 if relu else float("-inf"))
    expected = _shared_reference(image, weight, given_bias, relu)
    torch.testing.assert_close(out, expected, atol=_atol(variant, expected), rtol=1e-5)


@needs_compiler
@WIDTHS
@SHARED_WINOGRAD_VARIANTS
def test_shared_winograd_propagates_nan_and_checks_its_arguments(
    lanes: int, variant: tuple[tuple[str, int], ...]
) -> None:
    kernel = _kernel_at("slab_max_product", lanes, variant)
    assert isinstance(kernel, SlabMaxProduct)
    image, weight, bias = _shared_winograd_case(3, 3, 12, 16, 4, seed=21)
    weight[1, 2, 0, 0, 0] = float("nan")  # one diverged filter of the second model: its whole map
    image[0, 4, 5, 7] = float("nan")  # one pixel of input 7: the pool windows that see it, every model
    filters = kernel.winograd_filters(weight, (1, 1), (1, 1), 2)
    assert filters is not None
    out = torch.empty(3, 4, 5, 5, 16)
    kernel.winograd(image, filters, bias, out, floor=0.0)
    expected = _shared_reference(image, weight, bias, True)
    _assert_nan_as_the_direct_sum(out, expected, variant)
    assert torch.isnan(out[1, 2]).all() and torch.isnan(out[0, :, 2, 2, 7]).all()
    assert kernel.winograd_filters(torch.randn(3, 4, 3, 5, 5), (1, 1), (1, 1), 2) is None, "3x3 filters only"
    with pytest.raises(ValueError, match="multiple of 16"):
        kernel.winograd(image[..., :15].contiguous(), filters, bias, torch.empty(3, 4, 5, 5, 15))
    with pytest.raises(ValueError, match="disagree"):
        kernel.winograd(image, filters, bias, torch.empty(3, 4, 6, 6, 16))
    plain = _kernel_at(
        "slab_max_product", lanes, tuple(compiled_kernels.BUILD_VARIANTS["slab_max_product"][0].items())
    )
    assert isinstance(plain, SlabMaxProduct) and plain.winograd_filters(weight, (1, 1), (1, 1), 2) is None
    with pytest.raises(RuntimeError, match="no Winograd path"):
        plain.winograd(image, filters, bias, out)


@needs_compiler
@pytest.mark.parametrize("arch", [Architecture("cnn3", 3, 32), Architecture("cnn_digits", 1, 8)], ids=str)
@SHARED_WINOGRAD_VARIANTS
@pytest.mark.usefixtures("compiled_everywhere")
def test_population_forward_runs_a_shared_winograd_first_layer_of_several_channels(
    arch: Architecture, variant: tuple[tuple[str, int], ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = _Counted(_kernel_at("slab_max_product", compiled_kernels.native_lanes(), variant))
    monkeypatch.setattr(population_convolution, "slab_max_product_kernel", lambda: counted)
    generator = torch.Generator().manual_seed(22)
    state_dicts = []
    for _ in range(3):
        module = arch.build()
        initialise(module, "kaiming_uniform", generator)
        state_dicts.append(module.state_dict())
    state_dicts[2]["module_list.0.weight"][1, 0, 1, 1] = float("nan")  # a diverged model
    params = stack_state_dicts(arch, state_dicts)
    x = torch.randn(21, *arch.input_shape, generator=generator)  # 21: the last block padded
    with torch.inference_mode():
        logits = population_forward(arch, params, x)
    # CNN3's three channels take the path; cnn_digits' one keeps the im2col product, faster there
    expected_path = ("winograd", 2) if arch.in_channels >= 2 else ("call", 1)
    assert counted.calls and set(counted.calls) == {expected_path}, counted.calls
    side = {1: 2, 2: 4}[dict(variant)["WINOGRAD"]]
    first = convolution_kernels(arch, params, x)["module_list.0"]
    if arch.in_channels >= 2:
        assert first == f"compiled: Winograd F({side}x{side}, 3x3) from the image"
    else:
        assert first == "compiled: im2col product and max-pool"
    for i, state_dict in enumerate(state_dicts):
        expected = module_forward(arch, state_dict, x)
        assert torch.equal(torch.isnan(logits[i]), torch.isnan(expected))
        torch.testing.assert_close(logits[i].nan_to_num(), expected.nan_to_num(), atol=1e-5, rtol=1e-5)
    assert torch.isnan(logits[2]).all()


def test_each_convolution_says_what_it_runs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    arch = Architecture("cnn3", 3, 32)
    params = stack_state_dicts(arch, [arch.build().state_dict() for _ in range(2)])
    x = torch.randn(16, *arch.input_shape)
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "0")
    assert list(convolution_kernels(arch, params, x).values()) == [
        "torch: im2col product, max over the pool",
        "torch: grouped conv2d",
        "torch: grouped conv2d",
    ]
    if shutil.which("cc") is None:
        return
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "1")
    conv = compiled_kernels.model_conv_kernel()
    assert conv is not None
    side = {0: None, 16: 2, 36: 4}[conv.winograd_positions]
    later = f"compiled: Winograd F({side}x{side}, 3x3)" if side else "compiled: direct"
    kernels = convolution_kernels(arch, params, x)
    assert kernels["module_list.4"] == kernels["module_list.8"] == f"{later} per model and max-pool"
    assert kernels["module_list.0"].startswith("compiled: ")
    recorded = {key: value.requires_grad_(True) for key, value in params.items()}
    assert not any(
        kernel.startswith("compiled") for kernel in convolution_kernels(arch, recorded, x).values()
    ), "a call autograd records never runs the compiled kernels, and says so"


def test_population_forward_needs_no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    arch, state_dicts, x = _digits_case(seed=5)
    params = stack_state_dicts(arch, state_dicts)
    monkeypatch.setattr(population_convolution, "slab_max_product_kernel", lambda: None)
    with torch.inference_mode():
        logits = population_forward(arch, params, x)
    for i, state_dict in enumerate(state_dicts):
        torch.testing.assert_close(logits[i], module_forward(arch, state_dict, x), atol=1e-5, rtol=1e-5)


@pytest.mark.usefixtures("fresh_kernel_cache")
def test_without_a_compiler_the_kernel_is_absent_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(compiled_kernels.COMPILER_ENV, "/nonexistent/cc")
    with caplog.at_level(logging.WARNING, logger="zooscope.population.compiled_kernels"):
        assert slab_max_product_kernel() is None
    assert "no C compiler" in caplog.text and "/nonexistent/cc" in caplog.text


@pytest.mark.usefixtures("fresh_kernel_cache")
def test_a_failing_build_is_absent_and_shows_the_compiler_output(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'cc: fatal error: out of cheese' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv(compiled_kernels.COMPILER_ENV, str(broken))
    with caplog.at_level(logging.WARNING, logger="zooscope.population.compiled_kernels"):
        assert slab_max_product_kernel() is None
    assert "out of cheese" in caplog.text
    assert not list((tmp_path / "kernels").glob("*.so")), "a failed build leaves nothing to load"


@pytest.mark.usefixtures("fresh_kernel_cache")
def test_the_kernels_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compiled_kernels.ENABLE_ENV, "0")
    assert slab_max_product_kernel() is None


@needs_compiler
@pytest.mark.usefixtures("fresh_kernel_cache")
def test_a_build_is_cached_per_source_compiler_and_cpu(tmp_path) -> None:
    first = compiled_kernels.build("slab_max_product")
    assert first.parent == tmp_path / "kernels" and first.exists()
    modified = first.stat().st_mtime_ns
    assert compiled_kernels.build("slab_max_product") == first  # found, not rebuilt
    assert first.stat().st_mtime_ns == modified


def _grouped_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    dilation: int,
    pool: int,
    relu: bool,
) -> torch.Tensor:
    """The same as K nn.Conv2d (+ MaxPool2d, + ReLU), through one grouped convolution."""
    k, c, h, w, n = x.shape
    flat_bias = None if bias is None else bias.reshape(-1)
    out = torch.nn.functional.conv2d(
        x.permute(4, 0, 1, 2, 3).reshape(n, k * c, h, w),
        weight.reshape(-1, *weight.shape[2:]),
        flat_bias,
        stride,
        0,
        dilation,
        groups=k,
    )
    if pool > 1:
        out = torch.nn.functional.max_pool2d(out, pool)
    if relu:
        out = out.relu()
    return out.view(n, k, -1, *out.shape[2:]).permute(1, 2, 3, 4, 0)


def _atol(variant: tuple[tuple[str, int], ...], expected: torch.Tensor) -> float:
    """The direct sums and F(2x2, 3x3) agree with torch's convolution to 1e-4; F(4x4, 3x3) scales
    terms by up to 8 in its transforms and measured up to 5.1e-6 of the layer's largest output off
    (benchmarks/probe_kernels.py), so it is held to 4e-5 of that."""
    if dict(variant).get("WINOGRAD", 0) == 2:
        return max(1e-4, 4e-5 * float(expected.abs().max()))
    return 1e-4


@needs_compiler
@pytest.mark.parametrize(
    "models, channels, size, n, outs, kernel, stride, dilation, pool, with_bias",
    [
        (128, 8, 12, 16, 6, 5, 1, 1, 2, True),  # CNN-s's second layer and its pool
        (4, 16, 15, 48, 32, 3, 1, 1, 2, True),  # CNN3-like: an odd map, the pool drops a border
        (3, 5, 9, 32, 7, 3, 2, 1, 1, False),  # stride 2, no pool, no bias
        (2, 3, 11, 16, 5, 3, 1, 2, 2, True),  # dilation 2
        (2, 3, 12, 16, 2, 3, 1, 1, 3, True),  # a 3x3 pool
        (3, 4, 12, 16, 5, 3, 1, 1, 2, False),  # 5x5 pooled: F(4x4, 3x3)'s last blocks cross the edge
        (2, 32, 6, 16, 15, 3, 1, 1, 2, True),  # CNN3's third layer: one F(4x4, 3x3) block
        (2, 2, 9, 16, 3, 3, 1, 1, 2, True),  # 3x3 pooled, 9 wide: the edge block reads 3 columns of 6
        (2, 2, 4, 16, 3, 3, 1, 1, 2, True),  # one pooled output from a 4x4 map: a 6x6 block on 4x4
    ],
)
@pytest.mark.parametrize("relu", [False, True])
@WIDTHS
@MODEL_CONV_VARIANTS
def test_model_conv_matches_grouped_convolution(
    models: int,
    channels: int,
    size: int,
    n: int,
    outs: int,
    kernel: int,
    stride: int,
    dilation: int,
    pool: int,
    with_bias: bool,
    relu: bool,
    lanes: int,
    variant: tuple[tuple[str, int], ...],
) -> None:
    conv = _kernel_at("model_conv", lanes, variant)
    assert isinstance(conv, ModelConv)
    generator = torch.Generator().manual_seed(models * size + n)
    x = torch.randn(models, channels, size, size, n, generator=generator)
    weight = torch.randn(models, outs, channels, kernel, kernel, generator=generator)
    bias = torch.randn(models, outs, generator=generator) if with_bias else None
    expected = _grouped_reference(x, weight, bias, stride, dilation, pool, relu)
    out = torch.full(expected.shape, 123.0)
    floor = 0.0 if relu else float("-inf")
    conv(x, weight, bias, out, (stride, stride), (dilation, dilation), pool=pool, floor=floor)
    torch.testing.assert_close(out, expected, atol=_atol(variant, expected), rtol=1e-5)


@needs_compiler
@WIDTHS
@MODEL_CONV_VARIANTS
def test_model_conv_propagates_nan_and_checks_its_arguments(
    lanes: int, variant: tuple[tuple[str, int], ...]
) -> None:
    conv = _kernel_at("model_conv", lanes, variant)
    assert isinstance(conv, ModelConv)
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(3, 2, 6, 6, 16, generator=generator)
    weight, bias = torch.randn(3, 4, 2, 3, 3, generator=generator), torch.randn(3, 4, generator=generator)
    weight[1, 2, 0, 0, 0] = float("nan")  # one diverged filter of the second model
    x[2, 0, 0, 0, 5] = float("nan")  # one input value of the third model
    out = torch.empty(3, 4, 2, 2, 16)
    conv(x, weight, bias, out, (1, 1), (1, 1), pool=2, floor=0.0)
    expected = _grouped_reference(x, weight, bias, 1, 1, 2, True)
    _assert_nan_as_the_direct_sum(out, expected, variant)
    assert torch.isnan(out[1, 2]).all() and torch.isnan(out[2, :, 0, 0, 5]).all()
    with pytest.raises(ValueError, match="multiple of 16"):
        conv(x[..., :15].contiguous(), weight, bias, torch.empty(3, 4, 2, 2, 15), (1, 1), (1, 1), pool=2)
    with pytest.raises(ValueError, match="contiguous float32"):
        conv(x.transpose(2, 3), weight, bias, out, (1, 1), (1, 1), pool=2)


@needs_compiler
@pytest.mark.parametrize("name", ["model_conv", "slab_max_product"])
def test_each_build_says_which_layers_take_its_winograd_path(name: str) -> None:
    for variant in compiled_kernels.BUILD_VARIANTS[name]:
        kernel = _kernel_at(name, compiled_kernels.native_lanes(), tuple(variant.items()))
        assert isinstance(kernel, SlabMaxProduct | ModelConv)
        assert kernel.winograd_positions == {0: 0, 1: 16, 2: 36}[variant.get("WINOGRAD", 0)]
        winograd = variant.get("WINOGRAD", 0) > 0
        assert kernel.takes_winograd((3, 3), (1, 1), (1, 1), 2) == winograd
        assert not kernel.takes_winograd((3, 3), (1, 1), (1, 1), 1), "only a layer with a 2x2 pool"
        assert not kernel.takes_winograd((3, 3), (2, 2), (1, 1), 2), "only stride 1"
        assert not kernel.takes_winograd((3, 3), (1, 1), (2, 2), 2), "no dilation"
        assert not kernel.takes_winograd((5, 5), (1, 1), (1, 1), 2), "only 3x3 filters"


@needs_compiler
@WIDTHS
@SHARED_WINOGRAD_VARIANTS
def test_shared_winograd_filters_go_into_memory_the_caller_keeps(
    lanes: int, variant: tuple[tuple[str, int], ...]
) -> None:
    kernel = _kernel_at("slab_max_product", lanes, variant)
    assert isinstance(kernel, SlabMaxProduct)
    weight = torch.randn(5, 32, 16, 3, 3, generator=torch.Generator().manual_seed(9))
    filters = kernel.winograd_filters(weight, (1, 1), (1, 1), 2)
    assert filters is not None
    assert filters.shape == kernel.filters_shape(weight) == (5, kernel.winograd_positions, 16, 32)
    given_memory = torch.full(kernel.filters_shape(weight), 123.0)
    assert kernel.winograd_filters(weight, (1, 1), (1, 1), 2, given_memory) is given_memory
    assert torch.equal(given_memory, filters)
    with pytest.raises(ValueError, match="not"):
        kernel.winograd_filters(weight, (1, 1), (1, 1), 2, torch.empty(5, 16, 16, 31))


@needs_compiler
@pytest.mark.parametrize(
    "arch",
    [
        Architecture("cnn_s", 1, 28),
        Architecture("cnn3", 3, 32),
        Architecture("cnn_s", 1, 28, activation="tanh"),
    ],
    ids=lambda a: f"{a.name}-{a.activation}",
)
@pytest.mark.usefixtures("compiled_everywhere")
def test_inference_runs_later_convolutions_in_the_compiled_kernel(
    arch: Architecture, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = compiled_kernels.model_conv_kernel()
    assert conv is not None
    counted = _Counted(conv)
    monkeypatch.setattr(population_convolution, "model_conv_kernel", lambda: counted)
    generator = torch.Generator().manual_seed(12)
    state_dicts = []
    for _ in range(3):
        module = arch.build()
        initialise(module, "kaiming_uniform", generator)
        state_dicts.append(module.state_dict())
    params = stack_state_dicts(arch, state_dicts)
    shared = torch.randn(21, *arch.input_shape, generator=generator)  # 21: one padded vector of 16 too many
    per_model = torch.randn(3, 21, *arch.input_shape, generator=generator)
    with torch.inference_mode():
        logits_shared = population_forward(arch, params, shared)
        logits_per_model = population_forward(arch, params, per_model)
    assert ("call", 2) in counted.calls, (
        "a convolution followed by a max-pool runs the pool in the same kernel"
    )
    for i, state_dict in enumerate(state_dicts):
        torch.testing.assert_close(
            logits_shared[i], module_forward(arch, state_dict, shared), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            logits_per_model[i], module_forward(arch, state_dict, per_model[i]), atol=1e-5, rtol=1e-5
        )


def test_calls_autograd_records_never_use_the_compiled_convolution(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the compiled convolution has no backward")

    monkeypatch.setattr(population_convolution, "model_conv_kernel", lambda: refuse)
    arch = Architecture("cnn_s", 1, 28)
    module = arch.build()
    initialise(module, "kaiming_uniform", torch.Generator().manual_seed(13))
    params = {k: v.requires_grad_(True) for k, v in stack_state_dicts(arch, [module.state_dict()]).items()}
    population_forward(arch, params, torch.randn(4, *arch.input_shape)).sum().backward()
    assert all(p.grad is not None for p in params.values())


@needs_compiler
@pytest.mark.usefixtures("fresh_kernel_cache")
def test_a_changed_header_gives_a_new_build(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = tmp_path / "sources"
    shutil.copytree(compiled_kernels.SOURCES, sources)
    monkeypatch.setattr(compiled_kernels, "SOURCES", sources)
    first = compiled_kernels.build("slab_max_product")
    header = sources / "vector.h"
    header.write_text(header.read_text() + "\n/* changed */\n")
    second = compiled_kernels.build("slab_max_product")
    assert second != first and first.exists() and second.exists()


def test_the_vector_width_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled_kernels, "cpu_flags", lambda: frozenset({"sse2", "avx", "avx2", "fma"}))
    assert compiled_kernels.native_lanes() == 8
    monkeypatch.setattr(compiled_kernels, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512bw"}))
    assert compiled_kernels.native_lanes() == 16


@needs_compiler
@pytest.mark.usefixtures("fresh_kernel_cache")
def test_each_vector_width_is_its_own_build() -> None:
    narrow, wide = compiled_kernels.build("model_conv", 8), compiled_kernels.build("model_conv", 16)
    assert narrow != wide and narrow.exists() and wide.exists()
    assert compiled_kernels.build("model_conv") == compiled_kernels.build(
        "model_conv", compiled_kernels.native_lanes()
    )
