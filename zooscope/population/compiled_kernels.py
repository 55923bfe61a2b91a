"""Small C kernels for the population program, built at run time with the machine's C compiler.

Two steps of a population forward have no good kernel in torch on a CPU (docs/benchmarks.md):
the first convolution with the max-pool after it (a matrix product, then an amax that reads its
four slabs back from memory), and a convolution of K models with a handful of channels each (a
grouped convolution, which oneDNN runs at a tenth of the machine's peak). `zooscope/population/kernels/*.c`
are plain C (no Python or torch headers), compiled once per machine with
`cc -O3 -march=native -fopenmp` into a cache folder and called through ctypes (which releases
the GIL while they run).

Everything here is optional: without a C compiler, with ZOOSCOPE_COMPILED_KERNELS=0, or when a
build fails, the kernel functions below return None (with one warning saying why) and the
program runs torch's ops, with the same results.
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
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENABLE_ENV = "ZOOSCOPE_COMPILED_KERNELS"  # "0" turns the kernels off
CACHE_ENV = "ZOOSCOPE_KERNEL_CACHE"  # where built kernels are kept (default ~/.cache/zooscope/kernels)
COMPILER_ENV = "CC"
FLAGS = ("-O3", "-march=native", "-std=gnu11", "-fopenmp", "-shared", "-fPIC")
SOURCES = Path(__file__).with_name("kernels")

LANES = 16  # floats per vector in the C code


class SlabMaxProduct:
    """out[r, c] = max(floor, max_s sum_t weight[r, t] * columns[t, s, c]) on torch's threads
    (see kernels/slab_max_product.c)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._function = library.slab_max_product
        pointers, sizes = [ctypes.c_void_p] * 3, [ctypes.c_long] * 4  # weight, columns, out; their shapes
        self._function.argtypes = [*pointers, *sizes, ctypes.c_float, ctypes.c_void_p]
        self._function.restype = None

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
        tail = torch.empty(taps * slabs * LANES)
        pointers = (weight.data_ptr(), columns.data_ptr(), out.data_ptr())
        with torch.profiler.record_function("zooscope::slab_max_product"):  # named in torch's profiler
            self._function(*pointers, rows, taps, slabs, width, floor, tail.data_ptr())
        return out


class ModelConv:
    """A plain convolution (no padding, one group) of K models on the layout [K, C, H, W, n], n a
    multiple of LANES, with the max-pool and the ReLU that may follow it, on torch's threads (see
    kernels/model_conv.c)."""

    def __init__(self, library: ctypes.CDLL) -> None:
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
        convolution (1: none); `floor` 0 adds a ReLU after it."""
        models, channels, height, width, n = x.shape
        outs, kh, kw = weight.shape[1], weight.shape[3], weight.shape[4]
        out_h = ((height - dilation[0] * (kh - 1) - 1) // stride[0] + 1) // pool
        out_w = ((width - dilation[1] * (kw - 1) - 1) // stride[1] + 1) // pool
        _check_tensors("model_conv", x, weight, out, *([] if bias is None else [bias]))
        if (
            n % LANES
            or weight.shape[:3] != (models, outs, channels)
            or (bias is not None and bias.shape != (models, outs))
            or out.shape != (models, outs, out_h, out_w, n)
        ):
            shapes = ", ".join(str(tuple(t.shape)) for t in (x, weight, out))
            raise ValueError(f"model_conv: shapes {shapes} disagree (or n is not a multiple of {LANES})")
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


@lru_cache(maxsize=1)
def slab_max_product_kernel() -> SlabMaxProduct | None:
    """The compiled first-layer kernel, or None when it cannot be had here (logged once)."""
    library = _library("slab_max_product")
    return None if library is None else SlabMaxProduct(library)


@lru_cache(maxsize=1)
def model_conv_kernel() -> ModelConv | None:
    """The compiled per-model convolution, or None when it cannot be had here (logged once)."""
    library = _library("model_conv")
    return None if library is None else ModelConv(library)


def forget_kernels() -> None:
    """Look for the kernels afresh on the next call (after the environment changed: tests)."""
    for cached in (_library, slab_max_product_kernel, model_conv_kernel):
        cached.cache_clear()


@lru_cache(maxsize=8)
def _library(name: str) -> ctypes.CDLL | None:
    if os.environ.get(ENABLE_ENV, "1") == "0":
        return None
    try:
        return ctypes.CDLL(str(build(name)))
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        log.warning("compiled kernel %s unavailable, using torch's (slower) ops: %s", name, error)
        return None


def build(name: str) -> Path:
    """kernels/<name>.c as a shared library in the cache, compiled unless already there.

    The cache key covers the source and the headers beside it, the compiler, the flags and the
    CPU: -march=native code from another machine sharing the folder could use instructions this
    one lacks."""
    compiler = shutil.which(os.environ.get(COMPILER_ENV, "cc"))
    if compiler is None:
        raise RuntimeError(f"no C compiler ({COMPILER_ENV}={os.environ.get(COMPILER_ENV, 'cc')!r} not found)")
    sources = [SOURCES / f"{name}.c", *sorted(SOURCES.glob("*.h"))]
    parts = [path.read_bytes() for path in sources] + [
        compiler.encode(),
        " ".join(FLAGS).encode(),
        _cpu_identity(),
    ]
    key = hashlib.sha256(b"\0".join(parts))
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "zooscope" / "kernels")
    library = cache / f"{name}-{key.hexdigest()[:16]}.so"
    if library.exists():
        return library
    cache.mkdir(parents=True, exist_ok=True)
    # built beside its final name and renamed: processes building at once never see half a file
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = Path(scratch) / library.name
        result = subprocess.run(
            [compiler, *FLAGS, "-o", str(built), str(SOURCES / f"{name}.c")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed on {name}.c: {result.stderr.strip()[-2000:]}")
        os.replace(built, library)
    return library


def _cpu_identity() -> bytes:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.machine()} {platform.processor()}".encode()
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(lines))).encode()
