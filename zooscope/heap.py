"""Keep freed memory in the process heap while a training loop runs.

Every step of a population training loop allocates and frees the same large tensors (a CNN-s
zoo of 96 models on batches of 32: an im2col of about 180 MB and activations of tens of MB).
glibc serves any allocation above 32 MB, and by default anything above its moving mmap
threshold, with a fresh mmap and gives it back with munmap on free, so each step faults every
page of those tensors in again: on a 2-core AMD EPYC a 24-epoch CNN-s build of 914 s spent
309 s in the kernel, with about 100 million minor page faults (docs/benchmarks.md, "Zoo
presets"). Inside `retained_heap()` large blocks come from the heap and stay there when freed,
so the next step reuses pages that are already mapped. On leaving, glibc's limits come back
and the retained memory is returned to the system.

Only glibc has these knobs (mallopt(3)); elsewhere `retained_heap()` changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import Iterator

# mallopt(3) parameters and glibc's documented defaults for them
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536
# Freed memory at the top of the heap is kept up to this much: the largest value mallopt
# takes, more than a training step here allocates (and returned on leaving anyway).
RETAINED_TRIM_THRESHOLD = 2**31 - 1

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist: this is glibc
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


_LIBC = _glibc()


def is_supported() -> bool:
    """Whether this process's C library lets `retained_heap()` change anything."""
    return _LIBC is not None


@contextlib.contextmanager
def retained_heap() -> Iterator[None]:
    """Within the block, large allocations come from the heap and freed ones stay mapped.

    Nested and concurrent uses share one setting: glibc's limits come back when the last one
    leaves.
    """
    global _depth
    if _LIBC is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _LIBC.mallopt(M_MMAP_MAX, 0)
            _LIBC.mallopt(M_TRIM_THRESHOLD, RETAINED_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _LIBC.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                _LIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)
