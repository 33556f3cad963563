"""Memory for a batch: the --max-memory budget, what the system has, what one file's run needs.

A run needs a base (interpreter, torch, buffers: 300 MB) plus twice its largest tensor plus
zstd's windows; `--jobs N` starts a file only while the sum of the estimates fits the budget.
"""

from __future__ import annotations

import os
import re
import stat
import sys

from fp8stream.errors import FP8StreamError, UsageError
from fp8stream.io.compression import MAX_WINDOW_BYTES, ZstdSettings, compression_memory
from fp8stream.io.reader import open_input, read_input_header
from fp8stream.io.storage import locate

MB = 1 << 20
BASE_MEMORY = 300 * MB  # interpreter, torch, buffers: the "+ 300 MB" of the bound


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4G', '512M', '1.5g', '300000000' to bytes (binary multiples)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"--max-memory: cannot read {text!r} (examples: 4G, 512M)")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024**power)


def memory_budget(text: str) -> int:
    """--max-memory in bytes; a budget below what every run needs (the 300 MB base) is a usage
    error, refused before anything starts."""
    budget = parse_size(text)
    if budget < BASE_MEMORY:
        raise UsageError(f"--max-memory {text}: below the {BASE_MEMORY // MB} MB that any run needs "
                         f"(interpreter, torch, buffers); give at least {BASE_MEMORY // MB}M")
    return budget


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, else physical memory: the default budget."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def memory_estimate(path: str, zstd: ZstdSettings | None) -> int:
    """What one file's run may take: 2 x largest tensor + 300 MB, plus zstd's windows and
    contexts. From the header alone; an unreadable header gets the base (it fails fast). A pipe
    (FIFO, /dev/fd/N) is not read twice: it gets the base and the largest zstd window."""
    extra = compression_memory(zstd.level, zstd.threads) if zstd else 0
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return BASE_MEMORY + MAX_WINDOW_BYTES + extra
        source = open_input(locate(path))
    except OSError:
        return BASE_MEMORY + extra
    except FP8StreamError:
        return BASE_MEMORY + extra
    try:
        header = read_input_header(source)
        window = getattr(source.stream, "window_size", 0) if source.compressed else 0
    except FP8StreamError:
        return BASE_MEMORY + extra
    finally:
        source.close()
    largest = max((t.nbytes for t in header.tensors), default=0)
    return 2 * largest + BASE_MEMORY + window + extra


def current_rss() -> int:
    """This process's resident memory now (statm), or its peak where statm is missing; the
    resource module is POSIX-only, so it is imported here (Windows has neither: 0)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        try:
            import resource
        except ImportError:
            return 0
        ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024  # bytes on macOS, KB on Linux
