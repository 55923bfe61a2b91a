"""retained_heap keeps a freed large block's pages mapped for the next one, and gives them back.

The blocks come from libc's malloc directly: torch's aligned allocations of one repeated size
interleave with small objects that glibc places between them, which hides the effect in a loop
this short (a training step's mix of sizes reuses the retained memory: docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import resource

import pytest

from zooscope import heap

pytestmark = pytest.mark.skipif(not heap.is_supported(), reason="mallopt is glibc's")

BLOCK_BYTES = 64 * 2**20  # above glibc's largest mmap threshold (32 MB): mmapped by default
PAGES = BLOCK_BYTES // resource.getpagesize()

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]


def faults_of_reallocations(times: int) -> int:
    """Minor page faults while a large block is allocated, written and freed `times` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        block = libc.malloc(BLOCK_BYTES)
        assert block
        ctypes.memset(block, 1, BLOCK_BYTES)
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def rss_pages() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])


def test_outside_every_reallocation_faults_its_pages_in_again() -> None:
    # the cost the helper exists for: without it, glibc maps each block afresh
    assert faults_of_reallocations(4) > 3 * PAGES


def test_inside_only_the_first_allocation_faults() -> None:
    with heap.retained_heap():
        faults_of_reallocations(1)  # the heap grows once
        assert faults_of_reallocations(4) < PAGES // 4


def test_leaving_restores_glibcs_limits_and_returns_the_memory() -> None:
    with heap.retained_heap():
        faults_of_reallocations(1)
        retained = rss_pages()
    assert rss_pages() < retained - PAGES // 2  # malloc_trim gave the block back
    assert faults_of_reallocations(4) > 3 * PAGES


def test_nested_uses_keep_the_setting_until_the_outer_one_leaves() -> None:
    with heap.retained_heap():
        with heap.retained_heap():
            faults_of_reallocations(1)
        assert faults_of_reallocations(4) < PAGES // 4
    assert faults_of_reallocations(4) > 3 * PAGES
