"""Peak memory of zstd compression per level and worker count: the README's table.

Each measurement runs in a fresh process (`ru_maxrss` is a high-water mark) that compresses
SIZE_MB of FP8-like bytes (random, top exponent bit clear, as the synthetic checkpoints) and
prints the peak RSS above the process's own baseline, next to fp8stream's estimate.
Usage: python scripts/zstd_memory.py [SIZE_MB] [LEVEL ...]
"""

from __future__ import annotations

import subprocess
import sys

CHILD = r"""
import io, resource, sys
import numpy as np
import zstandard
level, threads, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) << 20
rng = np.random.default_rng(0)
block = (rng.integers(0, 256, size=4 << 20, dtype=np.uint8) & 0xBF).tobytes()
class Null(io.RawIOBase):
    def writable(self): return True
    def write(self, b): return len(b)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
w = zstandard.ZstdCompressor(level=level, threads=threads).stream_writer(Null(), closefd=False)
for _ in range(size // len(block)):
    w.write(block)
w.close()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
"""


def main() -> None:
    from fp8stream.io.compression import compression_memory

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    levels = [int(a) for a in sys.argv[2:]] or [1, 3, 9, 19, 22]
    print(f"| level | workers | estimate (MB) | measured peak (MB, {size} MB input) |")
    print("|---|---|---|---|")
    for level in levels:
        for threads in (0, 1, 2):
            out = subprocess.run([sys.executable, "-c", CHILD, str(level), str(threads), str(size)],
                                 capture_output=True, text=True, check=True).stdout.strip()
            workers = "in caller" if threads == 0 else str(threads)
            print(f"| {level} | {workers} | {compression_memory(level, threads) >> 20} | {out} |", flush=True)


if __name__ == "__main__":
    main()
