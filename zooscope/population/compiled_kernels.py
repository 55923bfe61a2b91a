"""Small C kernels for the population program, built at run time with the machine's C compiler.

Two steps of a population forward have no good kernel in torch on a CPU (docs/benchmarks.md):
the first convolution with the max-pool after it (a matrix product, then an amax that reads its
four slabs back from memory), and a convolution of K models with a handful of channels each (a
grouped convolution, which oneDNN runs at a tenth of the machine's peak). `zooscope/population/kernels/*.c`
are plain C (no Python or torch headers), compiled once per machine with
`cc -O3 -march=native -fopenmp` and the vector width of its CPU (`native_lanes`) into a
cache folder, and called through ctypes (which releases the GIL while they run).

Everything here is optional: without a C compiler, with ZOOSCOPE_COMPILED_KERNELS=0, or when a
build fails, the kernel functions below return None (with one warning saying why) and the
program runs torch's ops, with the same results. A kernel that is built does not always run: by
default the program uses it only where it measured faster than torch's ops here (autotune.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch

from zooscope.machine import cpu_flags, cpuinfo_lines
from zooscope.population import autotune
from zooscope.population.kernel_cache import cache_folder

log = logging.getLogger(__name__)

# "0": torch's ops only; "1": every compiled kernel that can serve a call (the parity tests);
# unset or "auto": the kernels the autotune measured faster here (autotune.py)
ENABLE_ENV = "ZOOSCOPE_COMPILED_KERNELS"
COMPILER_ENV = "CC"
FLAGS = ("-O3", "-march=native", "-std=gnu11", "-fopenmp", "-shared", "-fPIC")
SOURCES = Path(__file__).with_name("kernels")

# Inputs per block the kernels take: a whole number of vectors at every width they are built
# for (16 or 8 floats), and one 64-byte cache line of float32.
INPUT_BLOCK = 16

# The builds of each kernel (its compile-time constants: a tile shape, and for model_conv whether
# 3x3 layers with a 2x2 pool take a Winograd path, 1 for F(2x2, 3x3), 2 for F(4x4, 3x3)), the first
# its default. Which runs fastest differs between CPUs more than their vector width says: on a
# Zen 4 EPYC (AVX-512) an 8 x 1 tile ran the first layers 1.6-1.8x as fast as 4 x 2, the shape an
# AVX2 EPYC had chosen, 6 x 2 or 8 x 1 ran the later convolutions 1.3-1.7x as fast as 3 x 4, the
# F(2x2, 3x3) path CNN3's second layer 1.7x as fast again and F(4x4, 3x3) 1.28x as fast as that
# (docs/benchmarks.md); on an Intel Xeon 8 x 1 had been no faster.
# Each kernel's builds are timed here once (kernel_variant); another than the default must take
# at most autotune.MARGIN of its time.
BUILD_VARIANTS: dict[str, tuple[Mapping[str, int], ...]] = {
    "slab_max_product": (
        {"ROWS": 4, "COLS": 2},
        {"ROWS": 8, "COLS": 1},
        {"ROWS": 8, "COLS": 1, "WINOGRAD": 1},
        {"ROWS": 8, "COLS": 1, "WINOGRAD": 2},
    ),
    "model_conv": (
        {"MAX_OB": 3, "MAX_JB": 4},
        {"MAX_OB": 8, "MAX_JB": 1},
        {"MAX_OB": 6, "MAX_JB": 2},
        {"MAX_OB": 8, "MAX_JB": 1, "WINOGRAD": 1},
        {"MAX_OB": 6, "MAX_JB": 2, "WINOGRAD": 1},
        {"MAX_OB": 8, "MAX_JB": 1, "WINOGRAD": 2},
        {"MAX_OB": 6, "MAX_JB": 2, "WINOGRAD": 2},
    ),
}
# What they are timed on, for 128 models: the first layers of CNN-s (rows, taps, slabs, width: its
# im2col product) and of CNN3 (channels, size, outs: the product, or a Winograd build's path), at
# 16 inputs; the second convolutions of CNN-s at 128 inputs and of CNN3 at 16 (channels, size,
# outs, kernel, pool, inputs), which take about as long as each other. The ranking held for the
# other layers of cnn_digits, CNN-s and CNN3.
SLAB_TIMING_PROBLEM = (128 * 8, 26, 4, 144 * 16)
SHARED_WINOGRAD_TIMING_PROBLEM = (3, 32, 16, 16)
MODEL_CONV_TIMING_PROBLEMS = ((8, 12, 6, 5, 2, 128), (16, 15, 32, 3, 2, 16))
TIMING_MODELS = 128

KernelMode = Literal["torch", "compiled", "auto"]
_MODES: dict[str, KernelMode] = {"0": "torch", "1": "compiled", "auto": "auto", "": "auto"}


def kernel_mode() -> KernelMode:
    """What ZOOSCOPE_COMPILED_KERNELS asks for: "torch", "compiled" or "auto" (the default)."""
    value = os.environ.get(ENABLE_ENV, "auto").strip().lower()
    if value not in _MODES:
        _warn_unknown_mode(value)
    return _MODES.get(value, "auto")


@lru_cache(maxsize=8)
def _warn_unknown_mode(value: str) -> None:
    log.warning("%s=%r is not 0, 1 or auto: autotuning the compiled kernels", ENABLE_ENV, value)


def native_lanes() -> int:
    """Floats per vector the C code is built for here (LANES in kernels/vector.h): 16 with AVX-512,
    8 otherwise (one AVX2 register; SSE and NEON hold it in two)."""
    return 16 if "avx512f" in cpu_flags() else 8


class _WinogradPath:
    """What a kernel library exports about its build's Winograd path (kernels/winograd.h)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        library.winograd_positions.restype = ctypes.c_int
        # a transformed filter's positions in this build's Winograd path (16 for F(2x2, 3x3), 36
        # for F(4x4, 3x3)); 0 in a build without one
        self.winograd_positions: int = library.winograd_positions()
        self._applies = library.winograd_applies
        self._applies.argtypes = [ctypes.c_long] * 7
        self._applies.restype = ctypes.c_int

    def takes_winograd(
        self, kernel_size: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], pool: int
    ) -> bool:
        """Whether this build runs a layer of these shapes (and the max-pool after it) on its
        Winograd path."""
        return bool(self._applies(*kernel_size, *stride, *dilation, pool))


class SlabMaxProduct(_WinogradPath):
    """The first convolution of a population, on the input every model sees, with the max-pool
    after it, on torch's threads (see kernels/slab_max_product.c): out[r, c] = max(floor, max_s
    sum_t weight[r, t] * columns[t, s, c]) from the im2col, and in a Winograd build `winograd`,
    the same for a 3x3 layer with a 2x2 pool from the image itself."""

    def __init__(self, library: ctypes.CDLL) -> None:
        super().__init__(library)
        self._function = library.slab_max_product
        pointers, sizes = [ctypes.c_void_p] * 3, [ctypes.c_long] * 4  # weight, columns, out; their shapes
        self._function.argtypes = [*pointers, *sizes, ctypes.c_float, ctypes.c_void_p]
        self._function.restype = None
        self._winograd = library.shared_winograd_conv if self.winograd_positions else None
        if self._winograd is not None:
            self._winograd.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 6 + [ctypes.c_float]
            self._winograd.restype = None
        self._filters = library.winograd_filters
        self._filters.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_long] * 10
        self._filters.restype = ctypes.c_int

    def filters_shape(self, weight: torch.Tensor) -> tuple[int, int, int, int]:
        """[K, P, C, O]: the shape of winograd_filters for weight [K, O, C, kh, kw]."""
        models, outs, channels = weight.shape[:3]
        return (models, self.winograd_positions, channels, outs)

    def winograd_filters(
        self,
        weight: torch.Tensor,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        pool: int,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """The transformed filters [K, P, C, O] (P = winograd_positions) this build's Winograd
        path multiplies by, for a layer of weight [K, O, C, kh, kw] (float32, CPU, contiguous)
        with this stride, dilation and pool, written into `out` (filters_shape) if given; None
        where this build runs the layer directly. Made once per forward call and given to each
        chunk's call of `winograd`."""
        shape = self.filters_shape(weight)
        filters = torch.empty(shape) if out is None else out
        _check_tensors("winograd_filters", weight, filters)
        if filters.shape != shape:
            raise ValueError(f"winograd_filters: out is {tuple(filters.shape)}, not {shape}")
        models, outs, channels, kh, kw = weight.shape
        shapes = (models, outs, channels, kh, kw, *stride, *dilation, pool)
        return filters if self._filters(weight.data_ptr(), filters.data_ptr(), *shapes) else None

    def __call__(
        self, weight: torch.Tensor, columns: torch.Tensor, out: torch.Tensor, *, floor: float = float("-inf")
    ) -> torch.Tensor:
        """weight [rows, taps], columns [taps, slabs, width], out [rows, width]: float32, CPU,
        contiguous (checked: the C code trusts the pointers it is given)."""
        rows, taps = weight.shape
        _, slabs, width = columns.shape
        _check_tensors("slab_max_product", weight, columns, out)
        if columns.shape[0] != taps or out.shape != (rows, width):
            shapes = f"{tuple(weight.shape)}, {tuple(columns.shape)}, {tuple(out.shape)}"
            raise ValueError(f"slab_max_product: shapes {shapes} disagree")
        tail = torch.empty(taps * slabs * INPUT_BLOCK)  # at least the C code's LANES
        pointers = (weight.data_ptr(), columns.data_ptr(), out.data_ptr())
        with torch.profiler.record_function("zooscope::slab_max_product"):  # named in torch's profiler
            self._function(*pointers, rows, taps, slabs, width, floor, tail.data_ptr())
        return out

    def winograd(
        self,
        image: torch.Tensor,
        filters: torch.Tensor,
        bias: torch.Tensor | None,
        out: torch.Tensor,
        *,
        floor: float = float("-inf"),
    ) -> torch.Tensor:
        """A 3x3 convolution (stride 1, no padding) of K models' filters with the image every model
        sees, the 2x2 max-pool after it (and a ReLU with floor 0), on this build's Winograd path:
        image [C, H, W, n], n a multiple of INPUT_BLOCK; filters [K, P, C, O] (winograd_filters);
        bias [K, O] or None; out [K, O, (H - 2) // 2, (W - 2) // 2, n]. Float32, CPU, contiguous."""
        if self._winograd is None:
            raise RuntimeError("slab_max_product: this build has no Winograd path")
        channels, height, width, n = image.shape
        models, positions, _, outs = filters.shape
        given = [t for t in (bias,) if t is not None]
        _check_tensors("shared_winograd_conv", image, filters, out, *given)
        if (
            n % INPUT_BLOCK
            or filters.shape != (models, self.winograd_positions, channels, outs)
            or (bias is not None and bias.shape != (models, outs))
            or out.shape != (models, outs, (height - 2) // 2, (width - 2) // 2, n)
        ):
            shapes = ", ".join(str(tuple(t.shape)) for t in (image, filters, out))
            raise ValueError(
                f"shared_winograd_conv: shapes {shapes} disagree (or n is not a multiple of {INPUT_BLOCK})"
            )
        bias_pointer = None if bias is None else bias.data_ptr()
        with torch.profiler.record_function("zooscope::shared_winograd_conv"):
            pointers = (image.data_ptr(), filters.data_ptr(), bias_pointer, out.data_ptr())
            self._winograd(*pointers, models, channels, height, width, n, outs, floor)
        return out


class ModelConv(_WinogradPath):
    """A plain convolution (no padding, one group) of K models on the layout [K, C, H, W, n], n a
    multiple of INPUT_BLOCK, with the max-pool and the ReLU that may follow it, on torch's threads
    (see kernels/model_conv.c)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        super().__init__(library)
        self._function = library.model_conv
        self._function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 13 + [ctypes.c_float]
        self._function.restype = None

    def __call__(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        out: torch.Tensor,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        *,
        pool: int = 1,
        floor: float = float("-inf"),
    ) -> torch.Tensor:
        """x [K, C, H, W, n], weight [K, O, C, kh, kw], bias [K, O] or None, out
        [K, O, Ho // pool, Wo // pool, n]: float32, CPU, contiguous (checked: the C code trusts the
        pointers it is given). `pool`: a max-pool with kernel = stride = pool after the
        convolution (1: none); `floor` 0 adds a ReLU after it. On a layer this build takes on its
        Winograd path (takes_winograd), the kernel transforms each model's filters itself."""
        models, channels, height, width, n = x.shape
        outs, kh, kw = weight.shape[1], weight.shape[3], weight.shape[4]
        out_h = ((height - dilation[0] * (kh - 1) - 1) // stride[0] + 1) // pool
        out_w = ((width - dilation[1] * (kw - 1) - 1) // stride[1] + 1) // pool
        given = [t for t in (bias,) if t is not None]
        _check_tensors("model_conv", x, weight, out, *given)
        if (
            n % INPUT_BLOCK
            or weight.shape[:3] != (models, outs, channels)
            or (bias is not None and bias.shape != (models, outs))
            or out.shape != (models, outs, out_h, out_w, n)
        ):
            shapes = ", ".join(str(tuple(t.shape)) for t in (x, weight, out))
            raise ValueError(
                f"model_conv: shapes {shapes} disagree (or n is not a multiple of {INPUT_BLOCK})"
            )
        with torch.profiler.record_function("zooscope::model_conv"):  # named in torch's profiler
            self._function(
                x.data_ptr(),
                weight.data_ptr(),
                None if bias is None else bias.data_ptr(),
                out.data_ptr(),
                models,
                channels,
                height,
                width,
                n,
                outs,
                kh,
                kw,
                *stride,
                *dilation,
                pool,
                floor,
            )
        return out


def _check_tensors(kernel: str, *tensors: torch.Tensor) -> None:
    for tensor in tensors:
        if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
            raise ValueError(f"{kernel} takes contiguous float32 CPU tensors")


# ZOOSCOPE_COMPILED_KERNELS is read on every call, outside the caches: it may change while a
# process runs (the tests switch it)


def slab_max_product_kernel() -> SlabMaxProduct | None:
    """The compiled first-layer kernel, or None when it cannot be had here (logged once)."""
    return None if kernel_mode() == "torch" else _slab_max_product()


def model_conv_kernel() -> ModelConv | None:
    """The compiled per-model convolution, or None when it cannot be had here (logged once)."""
    return None if kernel_mode() == "torch" else _model_conv()


def built_library(name: str) -> Path | None:
    """Where the kernel's shared library is, as it runs here (the build kernel_variant chose), or
    None when it cannot be had here (logged once). Its file name is its build's identity (source,
    compiler, flags, variant, CPU): the autotune keys on it."""
    if kernel_mode() == "torch":
        return None
    variant = kernel_variant(name)
    return None if variant is None else _built(name, _defines(variant))


def forget_kernels() -> None:
    """Look for the kernels afresh on the next call (after the compiler or cache changed: tests)."""
    for cached in (_built, _library, kernel_variant, _slab_max_product, _model_conv):
        cached.cache_clear()


@lru_cache(maxsize=4)
def kernel_variant(name: str) -> Mapping[str, int] | None:
    """The build of kernel `name` that runs here (one of BUILD_VARIANTS[name]): the default unless
    another measured faster on this machine, a decision kept on disk with the autotune's; None
    when the default cannot be built."""
    variants = BUILD_VARIANTS[name]
    # built side by side, one compiler process each: on a fresh machine the builds are part of
    # the first forward's time
    with ThreadPoolExecutor(max_workers=len(variants)) as pool:
        paths = list(pool.map(lambda variant: _built(name, _defines(variant)), variants))
    built = {variant_label(v): (v, path) for v, path in zip(variants, paths, strict=True) if path is not None}
    default = variant_label(variants[0])
    if default not in built:
        return None
    if len(built) == 1:
        return variants[0]
    identity = {
        "kernel": f"{name} build",
        "kernels": tuple(path.name for _, path in built.values()),
        "threads": torch.get_num_threads(),
    }

    def runner(labels: frozenset[str]) -> Callable[[], object]:
        (label,) = labels
        return _TIMING_PROBLEMS[name](ctypes.CDLL(str(built[label][1])))

    try:
        choice = autotune.choose(
            identity,
            {label: frozenset({label}) for label in built},
            runner,
            reference=default,
            models=TIMING_MODELS,
            inputs=0,
        )
    except OSError as error:  # a build that does not load: the default, which _library checks
        log.warning("compiled kernel %s: its builds not timed: %s", name, error)
        return variants[0]
    return built[choice.chosen][0]


def _slab_timing_problem(library: ctypes.CDLL) -> Callable[[], object]:
    kernel, (rows, taps, slabs, width) = SlabMaxProduct(library), SLAB_TIMING_PROBLEM
    weight, columns, out = torch.randn(rows, taps), torch.randn(taps, slabs, width), torch.empty(rows, width)
    channels, size, outs, inputs = SHARED_WINOGRAD_TIMING_PROBLEM
    pooled = (size - 2) // 2
    three_by_three = torch.randn(TIMING_MODELS, outs, channels, 3, 3)
    # the filters transformed once, as a forward call does for its chunks
    filters = kernel.winograd_filters(three_by_three, (1, 1), (1, 1), 2)
    if filters is not None:
        image, pooled_out = (
            torch.randn(channels, size, size, inputs),
            torch.empty(TIMING_MODELS, outs, pooled, pooled, inputs),
        )

        def second() -> object:
            return kernel.winograd(image, filters, None, pooled_out)
    else:
        taps_3x3, rows_3x3 = channels * 9 + 1, TIMING_MODELS * outs
        weight_3x3, columns_3x3 = (
            torch.randn(rows_3x3, taps_3x3),
            torch.randn(taps_3x3, 4, pooled * pooled * inputs),
        )
        out_3x3 = torch.empty(rows_3x3, pooled * pooled * inputs)

        def second() -> object:
            return kernel(weight_3x3, columns_3x3, out_3x3)

    def run() -> None:
        kernel(weight, columns, out)
        second()

    return run


def _model_conv_timing_problem(library: ctypes.CDLL) -> Callable[[], object]:
    kernel, runs = ModelConv(library), []
    for channels, size, outs, kernel_size, pool, inputs in MODEL_CONV_TIMING_PROBLEMS:
        x = torch.randn(TIMING_MODELS, channels, size, size, inputs)
        weight = torch.randn(TIMING_MODELS, outs, channels, kernel_size, kernel_size)
        pooled = (size - kernel_size + 1) // pool
        out = torch.empty(TIMING_MODELS, outs, pooled, pooled, inputs)
        runs.append((x, weight, torch.randn(TIMING_MODELS, outs), out, pool))

    def run() -> None:
        for x, weight, bias, out, pool in runs:
            kernel(x, weight, bias, out, (1, 1), (1, 1), pool=pool)

    return run


_TIMING_PROBLEMS = {"slab_max_product": _slab_timing_problem, "model_conv": _model_conv_timing_problem}


def variant_label(variant: Mapping[str, int]) -> str:
    """A build's name in decisions and benchmark tables: "MAX_OB=6 MAX_JB=2 WINOGRAD=1"."""
    return " ".join(f"{key}={value}" for key, value in variant.items())


def _defines(variant: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(variant.items())


@lru_cache(maxsize=1)
def _slab_max_product() -> SlabMaxProduct | None:
    library = _tuned_library("slab_max_product")
    return None if library is None else SlabMaxProduct(library)


@lru_cache(maxsize=1)
def _model_conv() -> ModelConv | None:
    library = _tuned_library("model_conv")
    return None if library is None else ModelConv(library)


def _tuned_library(name: str) -> ctypes.CDLL | None:
    variant = kernel_variant(name)
    return None if variant is None else _library(name, _defines(variant))


@lru_cache(maxsize=8)
def _built(name: str, defines: tuple[tuple[str, int], ...] = ()) -> Path | None:
    try:
        return build(name, defines=dict(defines))
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        log.warning("compiled kernel %s unavailable, using torch's ops: %s", name, error)
        return None


@lru_cache(maxsize=8)
def _library(name: str, defines: tuple[tuple[str, int], ...] = ()) -> ctypes.CDLL | None:
    path = _built(name, defines)
    if path is None:
        return None
    try:
        return ctypes.CDLL(str(path))
    except OSError as error:
        log.warning("compiled kernel %s does not load, using torch's ops: %s", name, error)
        return None


def build(name: str, lanes: int | None = None, defines: Mapping[str, int] | None = None) -> Path:
    """kernels/<name>.c as a shared library in the cache, compiled unless already there, for
    vectors of `lanes` floats (default: this CPU's, native_lanes()); `defines` override the
    kernel's compile-time constants (its tile shape, BUILD_VARIANTS: benchmarks/probe_kernels.py).

    The cache key covers the source and the headers beside it, the compiler, the flags and the
    CPU: -march=native code from another machine sharing the folder could use instructions this
    one lacks."""
    compiler = shutil.which(os.environ.get(COMPILER_ENV, "cc"))
    if compiler is None:
        raise RuntimeError(f"no C compiler ({COMPILER_ENV}={os.environ.get(COMPILER_ENV, 'cc')!r} not found)")
    overrides = (f"-D{key}={value}" for key, value in sorted((defines or {}).items()))
    flags = (*FLAGS, f"-DLANES={lanes or native_lanes()}", *overrides)
    sources = [SOURCES / f"{name}.c", *sorted(SOURCES.glob("*.h"))]
    parts = [path.read_bytes() for path in sources] + [
        compiler.encode(),
        " ".join(flags).encode(),
        _cpu_identity(),
    ]
    key = hashlib.sha256(b"\0".join(parts))
    cache = cache_folder()
    library = cache / f"{name}-{key.hexdigest()[:16]}.so"
    if library.exists():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    # built beside its final name and renamed: processes building at once never see half a file
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = Path(scratch) / library.name
        result = subprocess.run(
            [compiler, *flags, "-o", str(built), str(SOURCES / f"{name}.c")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed on {name}.c: {result.stderr.strip()[-2000:]}")
        os.replace(built, library)
    return library


def cpu_identity() -> str:
    """A short hash of this CPU's model name and instruction-set flags."""
    return hashlib.sha256(_cpu_identity()).hexdigest()[:16]


def _cpu_identity() -> bytes:
    lines = cpuinfo_lines() or (f"{platform.machine()} {platform.processor()}",)
    return "\n".join(lines).encode()
