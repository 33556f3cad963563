"""zstd on the fly: input detected by its magic bytes, output compressed in a streaming frame.

Memory is part of the tool's promise, so a number in the file must not drive an allocation:
decompression refuses a frame whose window is over 128 MB (libzstd's own default limit, checked
from the frame header before any data is decoded), and compression refuses a level and thread
count whose estimated memory is over what the caller allows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from fp8stream.errors import FP8StreamError, InvalidCheckpointError, UsageError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_SUFFIX = ".zst"
MAX_WINDOW_BYTES = 128 << 20  # libzstd's default decompression limit (window log 27)
# zstd's share of memory when no --max-memory is given: the same 128 MB for compression.
DEFAULT_COMPRESSION_BUDGET = 128 << 20
# zstandard's figure plus 15% and 8 MB of stream buffers: measured, level 19 took 85 MB for its
# estimated 81, level 22 725 MB for 641.
_BUFFER_MARGIN = 8 << 20
_MAX_FRAME_HEADER = 18  # largest zstd frame header: magic + descriptor + window + dict id + size


def is_zstd_path(path: str) -> bool:
    return path != "-" and path.endswith(ZSTD_SUFFIX)


def strip_zstd_suffix(name: str) -> str:
    return name[: -len(ZSTD_SUFFIX)] if name.endswith(ZSTD_SUFFIX) else name


class PrefixedReader:
    """A read-only stream that returns `prefix` first, then the rest of `stream`.

    Lets us sniff the first bytes of a pipe (which cannot seek) and still hand every byte on.
    """

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = memoryview(bytes(prefix))
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._stream.readinto(view) or 0

    def read(self, n: int = -1) -> bytes:
        """n bytes, fewer only at the end (like a buffered file), or everything for n < 0."""
        if n is None or n < 0:
            rest = self._stream.read()
            data, self._prefix = bytes(self._prefix) + rest, memoryview(b"")
            return data
        head = bytes(self._prefix[:n])
        self._prefix = self._prefix[len(head):]
        return head + read_prefix(self._stream, n - len(head)) if n > len(head) else head

    def close(self) -> None:
        self._stream.close()


def read_prefix(stream: BinaryIO, n: int) -> bytes:
    """Up to n bytes, fewer only at the end of the stream (pipes return short reads)."""
    parts = []
    remaining = n
    while remaining:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


class ZstdReader:
    """Decompressed bytes of a zstd stream, window capped, errors turned into one line."""

    def __init__(self, stream: BinaryIO, label: str) -> None:
        self.label = label
        head = read_prefix(stream, _MAX_FRAME_HEADER)
        try:
            params = zstandard.get_frame_parameters(head)
        except zstandard.ZstdError as e:
            raise InvalidCheckpointError(f"{label}: not a valid zstd frame ({e})") from None
        check_window(params.window_size, label)
        self.window_size = params.window_size
        decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
        self._reader = decompressor.stream_reader(PrefixedReader(head, stream), read_across_frames=True,
                                                  closefd=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        try:
            return self._reader.readinto(buffer)
        except zstandard.ZstdError as e:
            raise _describe_zstd_error(self.label, e) from None

    def read(self, n: int = -1) -> bytes:
        try:
            return self._reader.read(n)
        except zstandard.ZstdError as e:
            raise _describe_zstd_error(self.label, e) from None

    def close(self) -> None:
        self._reader.close()


def check_window(window_size: int, label: str) -> None:
    """Refuse a frame whose window is over the cap, before anything is allocated for it."""
    if window_size > MAX_WINDOW_BYTES:
        raise InvalidCheckpointError(
            f"{label}: zstd frame needs a {window_size >> 20} MB window, over the {MAX_WINDOW_BYTES >> 20} MB "
            "limit (recompress without --long or with --long=27 or less)"
        )


def _describe_zstd_error(label: str, e: zstandard.ZstdError) -> FP8StreamError:
    text = str(e)
    if "too much memory" in text:
        return InvalidCheckpointError(
            f"{label}: a zstd frame needs a window over the {MAX_WINDOW_BYTES >> 20} MB limit"
        )
    return InvalidCheckpointError(f"{label}: corrupt zstd data ({text.removeprefix('zstd decompress error: ')})")


@dataclass(frozen=True)
class ZstdSettings:
    """How outputs are compressed: level and worker threads (0: in the calling thread)."""

    level: int = 3
    threads: int = 0

    def describe_workers(self) -> str:
        return "in the calling thread" if self.threads <= 0 else f"with {self.threads} worker thread(s)"


def compression_memory(level: int, threads: int) -> int:
    """Estimated bytes zstd needs to compress at `level` with `threads` workers.

    zstandard's own estimate covers one single-threaded context (its multi-threaded estimate is
    broken in 0.25). A multi-threaded compressor has one context per worker, each worker holds
    job buffers (a job is 4 windows, at least 1 MB), and the caller a round buffer of jobs: the
    formula below is fitted, conservatively, to measurements (`scripts/zstd_memory.py`).
    """
    params = zstandard.ZstdCompressionParameters.from_level(level)
    context = params.estimated_compression_context_size() * 115 // 100 + _BUFFER_MARGIN
    if threads <= 0:
        return context
    job = 1 << max(20, params.window_log + 2)
    return threads * (context + 3 * job) + 2 * job


def fitting_threads(level: int, wanted: int, budget: int) -> int:
    """The most workers, at most `wanted`, whose estimated memory fits `budget` (0 if none)."""
    for threads in range(wanted, 0, -1):
        if compression_memory(level, threads) <= budget:
            return threads
    return 0


def check_compression_memory(settings: ZstdSettings, budget: int) -> None:
    """Refuse a level and thread count whose estimated memory is over `budget` bytes."""
    if not 1 <= settings.level <= zstandard.MAX_COMPRESSION_LEVEL:
        raise UsageError(f"--zstd-level must be 1..{zstandard.MAX_COMPRESSION_LEVEL}, not {settings.level}")
    need = compression_memory(settings.level, settings.threads)
    if need > budget:
        raise UsageError(
            f"zstd level {settings.level} {settings.describe_workers()} needs about {need >> 20} MB, "
            f"over the {budget >> 20} MB allowed (lower --zstd-level or --zstd-threads, or raise --max-memory)"
        )


class ZstdWriter:
    """Compresses everything written into one zstd frame on `sink`; `close` ends the frame."""

    def __init__(self, sink: BinaryIO, settings: ZstdSettings) -> None:
        compressor = zstandard.ZstdCompressor(level=settings.level, threads=settings.threads, write_checksum=True)
        self._writer = compressor.stream_writer(sink, closefd=False, write_return_read=True)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._writer.write(data)

    def flush(self) -> None:
        """Does nothing: a zstd flush mid-frame costs ratio; the frame ends in `close`."""

    def close(self) -> None:
        """End the frame (writes the checksum) and flush it to the sink."""
        self._writer.close()


def default_threads() -> int:
    """Compression workers by default: the CPUs, at most 4 (more gains little at level 3)."""
    return min(4, os.cpu_count() or 1)
