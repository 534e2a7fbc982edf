"""Keeping the host memory of a CPU quantize-on-load near the size of what it keeps.

Two things make the process's RSS grow far beyond the live tensors while a checkpoint is compressed on
the CPU, and both are handed back after every compressed module:

* freed heap: each compression allocates float32/complex temporaries several times the matrix; glibc
  keeps such freed blocks in the arenas of the loader's threads (`malloc_trim(0)` returns them);
* checkpoint pages: safetensors memory-maps the checkpoint; every page the loader has read stays
  resident in this process (file-backed RSS, the whole checkpoint by the end) although the weights were
  copied out. ``madvise(MADV_PAGEOUT)`` on those mappings lets the kernel reclaim them; it never loses
  data (a page touched again is read back from the file), so it is safe on any mapping.

Both are Linux (glibc) features; elsewhere they are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Callable, Optional

#: ``madvise`` advice: reclaim these pages (Linux >= 5.4).
MADV_PAGEOUT = 21
#: Memory-mapped files whose pages are handed back.
CHECKPOINT_SUFFIXES = (".safetensors",)


@functools.lru_cache(maxsize=1)
def _libc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc


def _malloc_trim() -> Optional[Callable[[int], int]]:
    libc = _libc()
    return getattr(libc, "malloc_trim", None) if libc is not None else None


def checkpoint_mappings(suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES) -> list[tuple[int, int, str]]:
    """``(start, end, path)`` of this process's memory mappings of files ending in `suffixes` (Linux)."""
    try:
        with open("/proc/self/maps") as handle:
            lines = handle.readlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].rstrip("\n").endswith(suffixes):
            start, end = (int(v, 16) for v in parts[0].split("-"))
            found.append((start, end, parts[5].rstrip("\n")))
    return found


def page_out_checkpoints(suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES) -> int:
    """Ask the kernel to reclaim the resident pages of mapped checkpoint files; returns the bytes advised."""
    libc = _libc()
    if libc is None:
        return 0
    advised = 0
    for start, end, _ in checkpoint_mappings(suffixes):
        if libc.madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
    return advised


def release_freed_heap() -> None:
    """Hand freed heap back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def release_freed_host_memory() -> None:
    """Hand freed heap (:func:`release_freed_heap`) and read checkpoint pages (:func:`page_out_checkpoints`)
    back to the OS; called by the quantizer after every module it compresses on the CPU."""
    release_freed_heap()
    page_out_checkpoints()


__all__ = ["CHECKPOINT_SUFFIXES", "checkpoint_mappings", "page_out_checkpoints", "release_freed_heap",
           "release_freed_host_memory"]
