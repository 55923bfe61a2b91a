"""What CPU this process runs on, as /proc/cpuinfo says: its model and instruction-set flags.

Timings are reported beside it (a figure from one CPU does not hold on another: Intel with
AVX-512 and AMX, AMD with AVX2 or AVX-512), and the compiled kernels are built for its vector width.
Where /proc/cpuinfo cannot be read, the model is `platform`'s answer and there are no flags.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

# The flags that change how fast our code runs, in the order a summary lists them.
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


@lru_cache(maxsize=1)
def cpuinfo_lines() -> tuple[str, ...]:
    """The distinct model-name and flag lines of /proc/cpuinfo (ARM names its flags Features)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    return tuple(
        sorted({line for line in info.splitlines() if line.startswith(("model name", "flags", "Features"))})
    )


def cpu_model() -> str:
    for line in cpuinfo_lines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (empty where they cannot be read)."""
    lines = [line for line in cpuinfo_lines() if line.startswith(("flags", "Features"))]
    return frozenset(flag for line in lines for flag in line.partition(":")[2].split())


def cpu_summary() -> str:
    """`AMD EPYC, 2 cores, flags avx2 avx512f`: the line a benchmark prints above its numbers."""
    flags = cpu_flags()
    vector = " ".join(flag for flag in VECTOR_FLAGS if flag in flags) or "none of " + "/".join(VECTOR_FLAGS)
    return f"{cpu_model()}, {os.cpu_count()} cores, flags {vector}"
