"""Keep glibc's allocator from handing freed tensor memory back to the OS between forwards.

A CPU forward allocates and frees tens of MB of activations (a chunk of 32 sequences
writes several (tokens x 4d) FFN activations of ~7 MB). glibc serves blocks that large
with fresh ``mmap`` pages, or returns the top of the heap to the OS on free (trim), so
the next forward page-faults on every page again: ~11k minor faults per 32-sequence
forward on this project's VM, about a third of the forward's CPU time. Raising the mmap
and trim thresholds makes freed blocks reusable; the process keeps its peak heap
(tens of MB at serving chunk sizes), which a serving process wants anyway.

Process-wide and idempotent; a no-op where the C library has no ``mallopt`` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest accepted mmap threshold on 64-bit (HEAP_MAX_SIZE / 2); larger blocks
#: are still mmapped, which serving chunk sizes stay far below.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 1024 * 1024 * 1024


@functools.cache
def retain_freed_memory() -> bool:
    """Set the thresholds once per process; True when the C library accepted them."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
