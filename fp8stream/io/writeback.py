"""Start the disk writing an output while the run goes on, so that the final fsync waits for
the last part only (io/atomic.py's temp file).

Linux's dirty-page writeback starts late (10% of memory dirty, or 30 s old): a run that writes a
1-2 GB file finishes with nearly all of it still in the page cache, and the fsync before the
rename then writes it all while the run waits. sync_file_range(SYNC_FILE_RANGE_WRITE) asks the
kernel to start writing a range now and returns. Python's os module has no such call: it is
libc's, through ctypes, on Linux only; elsewhere (and where it is refused) nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys
from typing import BinaryIO, Callable

WRITEBACK_BYTES = 64 << 20  # start the kernel writing back each part of this size as it is written
SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, do not wait


@functools.lru_cache(maxsize=1)
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux; Python's os has none), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to start writing the dirty pages of bytes [offset, offset + length) of `fd`
    (length 0: to the end of the file) to the disk now (it may wait while it queues them); only a
    hint, as above: nothing changes where the call is missing or refused."""
    start = _sync_file_range()
    if start is not None:
        start(fd, offset, length, SYNC_FILE_RANGE_WRITE)


class FilledWriteback:
    """For a file filled at fixed places front to back (the head start's copy): asks the kernel to
    write back what is filled, WRITEBACK_BYTES at a time as it goes, each request ending on a page
    boundary (a page still partly empty would be dirtied again by whoever fills the rest, and on
    some filesystems that write waits for the page's writeback)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.asked_to = 0  # bytes [0, asked_to) asked for

    def filled_to(self, end: int) -> None:
        """The file is filled up to `end` (the copy's latest step ends there)."""
        end -= end % mmap.PAGESIZE
        if end - self.asked_to >= WRITEBACK_BYTES:
            start_writeback(self.fd, self.asked_to, end - self.asked_to)
            self.asked_to = end


class Writeback:
    """The temp file's writer: after every WRITEBACK_BYTES it asks the kernel to start writing
    them to the disk (sync_file_range with SYNC_FILE_RANGE_WRITE: it starts the I/O and returns),
    so the disk works while the run goes on. Only a hint: durability is still the fsync before
    the rename; where the call is missing or refused, nothing changes."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self._written = 0  # bytes written through this object
        self._started = 0  # bytes whose writeback has been started

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self.raw.write(data)
        self._written += len(data)
        if self._written - self._started >= WRITEBACK_BYTES:
            self.raw.flush()  # the bytes reach the page cache before their writeback is asked for
            start_writeback(self.raw.fileno(), self._started, self._written - self._started)
            self._started = self._written
        return n if n is not None else len(data)

    def flush(self) -> None:
        self.raw.flush()

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
