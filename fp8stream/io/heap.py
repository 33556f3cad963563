"""Keep freed large buffers from piling up in the C heap (glibc only; a no-op elsewhere).

glibc raises its mmap threshold each time a large block is freed, so later multi-MB
temporaries (torch and numpy working arrays, zstd buffers) come from per-thread heap arenas that
keep freed memory. Measured on a 2-block Wan checkpoint: peak RSS 321 MB with a fixed 1 MB
threshold, 411-1022 MB without. Chunk buffers themselves are recycled (`io.overlap`).

The other side of it: with the default trim threshold (128 KB), every freed sub-MB temporary
at the top of a heap (the row sums' lookups, a few hundred KB each, thousands per GB) is handed
back to the kernel and faulted in again by the next: 2 million page faults and 3 s of system
time on a 2 GB Flux file. Keeping up to TRIM_THRESHOLD free at the top of each heap removes
them (peak RSS +5 MB there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 32 << 20


def return_large_buffers_to_the_system(threshold: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold (and its trim threshold: above); True if it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return (bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
                and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))
    except (OSError, AttributeError):
        return False
