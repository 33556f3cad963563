"""The input's bytes read into the page cache, front to back, while diffusers imports.

Why: the forward pass cannot start before diffusers and the model are loaded (seconds), and it
then reads the weights in execution order, which is not the file's order. One thread reading
the files sequentially meanwhile keeps the disk busy with large sequential reads from the
start; the pass's own reads, and the copy pass after it, then find the bytes in the page cache.
Only where the input fits in half the available memory: on a smaller machine the warm bytes
would be evicted before anyone used them, so the pass reads on its own (each byte is then read
from the disk twice, once by the pass and once by the copy). Changes no value.
"""

from __future__ import annotations

import os
import threading

from fp8stream.memory import available_memory

READ_BYTES = 16 << 20  # one read; the kernel's read-ahead keeps the disk streaming between them


class PageCacheWarmer:
    """A daemon thread reading `paths` front to back into one reused buffer; `stop()` ends it."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.bytes_read = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fp8stream-warm", daemon=True)

    def start(self) -> "PageCacheWarmer":
        self._thread.start()
        return self

    def _run(self) -> None:
        buf = memoryview(bytearray(READ_BYTES))
        for path in self.paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # the pass itself will say what is wrong with the file
            try:
                offset = 0
                while not self._stop.is_set():
                    got = os.preadv(fd, [buf], offset)
                    if got <= 0:
                        break
                    offset += got
                    self.bytes_read += got
            except OSError:
                pass  # warming is an optimisation: the real reads report errors
            finally:
                os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_warming(paths: list[str]) -> PageCacheWarmer | None:
    """Start warming the page cache with `paths` where they fit in half the available memory
    and the platform has positioned reads; None where it does not warm."""
    if not hasattr(os, "preadv"):
        return None
    try:
        total = sum(os.path.getsize(p) for p in paths)
    except OSError:
        return None
    if total > available_memory() // 2:
        return None
    return PageCacheWarmer(paths).start()
