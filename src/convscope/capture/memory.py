"""Keep freed memory in the process, so a capture does not fault its pages in anew every pass.

A full capture holds every block's x, conv, z, a and their gradients until the trace is
dropped: hundreds of MB at a time on real nets. glibc's malloc hands big freed blocks back to
the kernel (munmap, or trimming the heap once more than twice its dynamic mmap threshold is free
at the top), so the next pass takes a page fault for every 4 KiB it touches — measured here at
~2.5 µs a page, 100k+ faults per pass of a ResNet-style stack at batch 4: the kernel time alone
was more than the whole forward (bench/capture.py `--default-malloc` shows it). jemalloc and
tcmalloc keep such memory for reuse; glibc does the same when asked (`mallopt`, or the
MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables).

`keep_freed_memory()` asks glibc once per process, the first time a Probe is entered: blocks
up to MMAP_THRESHOLD come from the heap and up to TRIM_THRESHOLD of free heap top is kept. The
process's resident memory then stays near its peak instead of shrinking between passes. It
leaves the allocator alone when the user chose one: `CONVSCOPE_MALLOC=default`, any MALLOC_*_
tuning variable, a preloaded jemalloc/tcmalloc/mimalloc, or a C library that is not glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

__all__ = ["MallocSetting", "keep_freed_memory"]

ENV = "CONVSCOPE_MALLOC"
MMAP_THRESHOLD = 512 * 2**20  # blocks below this come from the heap, not their own mmap
TRIM_THRESHOLD = 2**30  # free memory at the heap's top kept before trimming
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


@dataclass(frozen=True)
class MallocSetting:
    """What `keep_freed_memory()` did: `kept` is True when glibc now keeps freed memory."""

    kept: bool
    reason: str


_done: MallocSetting | None = None  # once per process: the allocator is process-wide


def keep_freed_memory() -> MallocSetting:
    """Ask glibc to keep freed memory for reuse (once per process); say what was done.

    Raises ValueError when CONVSCOPE_MALLOC holds something other than "keep" or "default".
    """
    global _done
    choice = os.environ.get(ENV, "keep").strip().lower()
    if choice not in ("keep", "default"):
        raise ValueError(f"{ENV} must be 'keep' or 'default', got {os.environ[ENV]!r}")
    if _done is not None:
        return _done
    _done = _decide(choice)
    return _done


def _decide(choice: str) -> MallocSetting:
    if choice == "default":
        return MallocSetting(False, f"left alone: {ENV}=default")
    tuned = [v for v in _TUNING if v in os.environ]
    if tuned:
        return MallocSetting(False, f"left alone: {tuned[0]} is set")
    preload = os.environ.get("LD_PRELOAD", "")
    other = next((a for a in _OTHER_ALLOCATORS if a in preload), None)
    if other:
        return MallocSetting(False, f"left alone: {other} is preloaded")
    if not sys.platform.startswith("linux"):
        return MallocSetting(False, f"left alone: not glibc ({sys.platform})")
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        version = libc.gnu_get_libc_version().decode()
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return MallocSetting(False, "left alone: the C library is not glibc")
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        return MallocSetting(False, f"left alone: glibc {version} refused mallopt")
    return MallocSetting(
        True,
        f"glibc {version} keeps freed memory (mmap threshold {MMAP_THRESHOLD >> 20} MiB,"
        f" trim threshold {TRIM_THRESHOLD >> 20} MiB)",
    )
