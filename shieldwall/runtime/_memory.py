"""Keep large freed blocks in the process instead of returning them to the OS (glibc only).

PyTorch's CPU allocator takes large tensors from ``malloc``, and glibc serves blocks above its
mmap threshold (at most 32 MiB, raised dynamically) with fresh ``mmap`` calls: every round's
``(n, d)`` update matrix, and every large temporary, is then new memory whose first touch costs
one page fault per 4 KiB page. For a 100-client MLP round (80 MB of rows) that was 40% of the
round. Raising the mmap threshold and the trim threshold makes freed blocks reusable, as a
caching allocator would (the PyTorch CPU tuning guide suggests jemalloc or tcmalloc for the same
reason). The cost: memory freed by the process is kept for its later allocations rather than
given back to the OS, so the resident size stays near its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["retain_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused
_TRIM_THRESHOLD = (1 << 31) - 1  # keep up to 2 GiB of free heap top instead of trimming it
_done: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's thresholds once per process; whether they are set (False off glibc)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):  # no libc to talk to: keep the defaults
        _done = False
    if _done:
        log.debug("malloc keeps freed blocks up to 1 GiB for reuse (no per-round page faults)")
    return _done
