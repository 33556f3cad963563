"""Reading safetensors input: a lazy reader for positioned reads, and a one-pass tensor stream.

`calibrate` reads its input once, front to back, in data order (`TensorStream`), so the same
code serves files and pipes and the disk sees large sequential reads. `inspect` and `verify`
use `LazyFile` to fetch single tensors with positioned reads. Neither maps the file: touched
pages of a mapping count in RSS and page-faulting a cold mapping is slow (docs/formats.md).
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterator

from fp8stream.errors import FP8StreamError, InvalidCheckpointError, UsageError
from fp8stream.io.compression import ZSTD_MAGIC, PrefixedReader, ZstdReader, read_prefix
from fp8stream.io.header import Header, TensorInfo, read_exactly, read_header
from fp8stream.io.overlap import ChunkReader, chunk_plan, release
from fp8stream.io.storage import InputSource, Location, locate

CHUNK_BYTES = 4 << 20


def open_input(location: Location) -> InputSource:
    """Open a file, '-' for stdin, or a URL (one sequential stream of ranged reads, docs/remote.md),
    with a one-line error for what a user can get wrong.

    zstd input (a file or a pipe) is recognised by its magic bytes and decompressed on the fly:
    a safetensors file cannot start with them (its header length would be over 4 GB).
    """
    return _checked(location.open_stream())


def open_positioned(path: str) -> InputSource:
    """An input for positioned reads (seek and read, `LazyFile`): a file as `open_input` opens
    it; a URL by ranged requests with its size known (a zstd object as the stream it must be)."""
    location = locate(path)
    ranged = location.open_ranged()
    source = _checked(ranged)
    if source.compressed and ranged.read_at is not None:
        source.close()
        return _checked(location.open_stream())
    return source


def _checked(source: InputSource) -> InputSource:
    """zstd recognised; the input closed if even that fails."""
    try:
        return _detect_zstd(source)
    except BaseException:
        source.close()
        raise


def _detect_zstd(source: InputSource) -> InputSource:
    try:
        head = read_prefix(source.stream, len(ZSTD_MAGIC))
    except OSError as e:
        raise FP8StreamError(f"{source.label}: read error ({e.strerror})") from None
    if head == ZSTD_MAGIC:
        reader = ZstdReader(PrefixedReader(head, source.stream), source.label)
        return InputSource(reader, None, source.label, source.path, raw=source.stream, compressed=True)  # type: ignore[arg-type]
    if source.size is not None:
        source.stream.seek(0)
    else:
        source.stream = PrefixedReader(head, source.stream)  # type: ignore[assignment]
    return source


def read_input_header(source: InputSource) -> Header:
    try:
        return read_header(source.stream, source.size)
    except InvalidCheckpointError as e:
        raise InvalidCheckpointError(f"{source.label}: {e}") from None
    except OSError as e:
        raise FP8StreamError(f"{source.label}: read error ({e.strerror})") from None


class _Recorder:
    """Keeps what is read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.seen = bytearray()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.seen += data
        return data


def read_stream_header(source: InputSource) -> tuple[Header, bytes]:
    """The header, and the bytes it was read from (length + header), which a stream cannot give again."""
    recorder = _Recorder(source.stream)
    source.stream = recorder  # type: ignore[assignment]
    try:
        header = read_input_header(source)
    finally:
        source.stream = recorder.stream
    return header, bytes(recorder.seen)


def chunk_bytes_for(info: TensorInfo) -> int:
    """Chunk size of a tensor in a stream: whole rows for matrices (a weight's rows can be
    worked on per chunk), else CHUNK_BYTES. Rows longer than a chunk are not aligned."""
    if len(info.shape) >= 2 and info.shape[0] and info.nbytes:
        row = info.nbytes // info.shape[0]
        if 0 < row <= CHUNK_BYTES:
            return (CHUNK_BYTES // row) * row
    return CHUNK_BYTES


class TensorStream:
    """Yields each tensor's bytes in data order, in chunks, from a sequential stream.

    The stream must be positioned just after the header. A thread reads ahead into a fixed pool
    of buffers (`io.overlap`), so the disk works while we compute. A chunk is valid until the
    next one is asked for; hand it to the writer to keep it longer. At the end, `finish` checks
    the input did not change size while being read.
    """

    def __init__(self, source: InputSource, header: Header) -> None:
        self.source = source
        self.header = header
        self.bytes_read = 0
        self._reader = ChunkReader(source.stream, chunk_plan(header.tensors, chunk_bytes_for), CHUNK_BYTES)
        source.readahead = self._reader

    def chunks(self, info: TensorInfo) -> Iterator[memoryview]:
        """The tensor's bytes in chunks (whole rows for matrices; see chunk_bytes_for)."""
        if info.begin != self.bytes_read:
            raise RuntimeError(f"stream out of order at {info.name!r}")
        remaining = info.nbytes
        while remaining:
            chunk = self._next(info)
            remaining -= len(chunk)
            self.bytes_read += len(chunk)
            try:
                yield chunk
            finally:
                release(chunk)

    def _next(self, info: TensorInfo) -> memoryview:
        try:
            return self._reader.next()
        except EOFError:
            raise InvalidCheckpointError(
                f"{self.source.label}: file ends inside tensor {info.name!r} (truncated)") from None
        except OSError as e:
            raise FP8StreamError(f"{self.source.label}: read error ({e.strerror})") from None

    def read_all(self, info: TensorInfo) -> bytearray:
        """A tensor's bytes as one copy (for small tensors: markers, scales)."""
        out = bytearray()
        for chunk in self.chunks(info):
            out += chunk
        return out

    def finish(self) -> None:
        """Check that the input ends where the header said: a file kept its size, a stream
        (pipe, zstd) has no byte left, which also makes zstd verify its frame checksum.
        The read-ahead buffers are given back first: the tail's maths needs the memory."""
        self._reader.close()
        if self.source.size is not None:
            size = os.fstat(self.source.stream.fileno()).st_size
            if size != self.source.size:
                raise InvalidCheckpointError(f"{self.source.label}: file changed size while being read")
            return
        try:
            extra = self.source.stream.read(1)
        except OSError as e:
            raise FP8StreamError(f"{self.source.label}: read error ({e.strerror})") from None
        if extra:
            raise InvalidCheckpointError(f"{self.source.label}: data continues after the last tensor")


class LazyFile:
    """A safetensors file whose header is parsed and whose tensors are read on demand."""

    def __init__(self, path: str) -> None:
        self.source = open_positioned(path)  # a URL: one ranged request per read (docs/remote.md)
        if self.source.path is None:
            raise UsageError("this command needs a file, not '-'")
        if self.source.compressed:
            self.source.close()
            raise UsageError(f"{path}: this command needs an uncompressed file")
        self.header = read_input_header(self.source)

    def __enter__(self) -> "LazyFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.close()

    def read_chunks(self, info: TensorInfo, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """One tensor's bytes by positioned reads, at most chunk_bytes at a time."""
        read_at = self._read_at()
        offset = self.header.data_start + info.begin
        done = 0
        while done < info.nbytes:
            want = min(info.nbytes - done, chunk_bytes)
            part = read_at(offset + done, want)
            if len(part) != want:
                raise InvalidCheckpointError(f"{self.source.label}: file ends inside {info.name!r}")
            done += want
            yield part

    def _read_at(self):
        """pread on a file; a URL's own positioned read (one ranged request, the seek and the read
        locked together); seek and read elsewhere (Windows)."""
        if self.source.read_at is not None:
            return self.source.read_at
        if not hasattr(os, "pread"):
            return self._seek_read
        fd = self.source.stream.fileno()
        return lambda offset, n: os.pread(fd, n, offset)

    def _seek_read(self, offset: int, n: int) -> bytes:
        self.source.stream.seek(offset)
        return read_exactly(self.source.stream, n, "data")

    def read_into(self, info: TensorInfo, out: memoryview) -> None:
        """One tensor's bytes (or part: `info`'s range) into `out`, by positioned reads straight
        into the buffer: no intermediate chunk and no join copy (the forward pass's weights)."""
        if self.source.read_at is not None or not hasattr(os, "preadv"):
            out[:] = b"".join(self.read_chunks(info))
            return
        fd = self.source.stream.fileno()
        offset = self.header.data_start + info.begin
        done = 0
        while done < info.nbytes:
            got = os.preadv(fd, [out[done:info.nbytes]], offset + done)
            if got <= 0:
                raise InvalidCheckpointError(f"{self.source.label}: file ends inside {info.name!r}")
            done += got

    def read(self, info: TensorInfo) -> bytes:
        """One tensor's bytes by positioned reads (seek+read where pread does not exist)."""
        return b"".join(self.read_chunks(info))
