"""Process-level performance settings.

On the virtual machines this project was measured on, a freshly mapped 4 KB page costs about
1 µs, so the large short-lived tensors of long-sequence training spend much of their time in
page faults: glibc hands allocations over 128 KB to ``mmap`` and returns them to the kernel
on free. :func:`keep_freed_memory` tells glibc to serve everything from its heap and to keep
freed memory for reuse (``mallopt``: no mmap, a trim threshold of 2 GB, 64 MB top pad). It is
measured in BENCHMARKS.md (about 2× on the attention's fwd+bwd at T = 16,384) at the cost of a
higher resident peak. The ``hrrformer`` command applies it unless ``HRRFORMER_MALLOC=default``;
library users opt in by calling it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory", "keep_freed_memory_env"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
TRIM_THRESHOLD, TOP_PAD = 2**31 - 1, 64 * 2**20


def keep_freed_memory_env() -> dict[str, str]:
    """The same settings as environment variables, for a child process (glibc reads them at start)."""
    return {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD), "MALLOC_TOP_PAD_": str(TOP_PAD)}


def keep_freed_memory(trim_threshold: int = TRIM_THRESHOLD, top_pad: int = TOP_PAD) -> bool:
    """Make glibc keep freed memory in the process. Returns False where that is not possible
    (not Linux/glibc, or ``HRRFORMER_MALLOC=default`` is set)."""
    if os.environ.get("HRRFORMER_MALLOC", "keep") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, trim_threshold) and mallopt(_M_TOP_PAD, top_pad)
    return bool(ok)
