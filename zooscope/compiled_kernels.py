"""Small C kernels for the population program, built at run time with the machine's C compiler.

torch has no kernel that fuses a matrix product with the max-pool after it, and for the first
convolution of a population that pair streams four times the pooled output through memory
(docs/benchmarks.md). `zooscope/kernels/*.c` are plain C (no Python or torch headers), compiled
once per machine with `cc -O3 -march=native -fopenmp` into a cache folder and called through
ctypes (which releases the GIL while they run).

Everything here is optional: without a C compiler, with ZOOSCOPE_COMPILED_KERNELS=0, or when the
build fails, `slab_max_product_kernel()` is None (with one warning saying why) and the program
uses torch's product and amax, with the same results.
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
        for tensor in (weight, columns, out):
            if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
                raise ValueError("slab_max_product takes contiguous float32 CPU tensors")
        if columns.shape[0] != taps or out.shape != (rows, width):
            shapes = f"{tuple(weight.shape)}, {tuple(columns.shape)}, {tuple(out.shape)}"
            raise ValueError(f"slab_max_product: shapes {shapes} disagree")
        tail = torch.empty(taps * slabs * LANES)
        pointers = (weight.data_ptr(), columns.data_ptr(), out.data_ptr())
        with torch.profiler.record_function("zooscope::slab_max_product"):  # named in torch's profiler
            self._function(*pointers, rows, taps, slabs, width, floor, tail.data_ptr())
        return out


@lru_cache(maxsize=1)
def slab_max_product_kernel() -> SlabMaxProduct | None:
    """The compiled kernel, or None when it cannot be had here (logged once)."""
    if os.environ.get(ENABLE_ENV, "1") == "0":
        return None
    try:
        return SlabMaxProduct(ctypes.CDLL(str(build("slab_max_product"))))
    except (OSError, subprocess.SubprocessError, RuntimeError) as error:
        log.warning("compiled kernels unavailable, using torch's (slower) ops: %s", error)
        return None


def build(name: str) -> Path:
    """kernels/<name>.c as a shared library in the cache, compiled unless already there.

    The cache key covers the source, the compiler, the flags and the CPU: -march=native code
    from another machine sharing the folder could use instructions this one lacks."""
    compiler = shutil.which(os.environ.get(COMPILER_ENV, "cc"))
    if compiler is None:
        raise RuntimeError(f"no C compiler ({COMPILER_ENV}={os.environ.get(COMPILER_ENV, 'cc')!r} not found)")
    source = (SOURCES / f"{name}.c").read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(FLAGS).encode(), _cpu_identity()]))
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
