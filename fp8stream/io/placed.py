"""An output file written at fixed places: the layout is known from the header before any data,
so each tensor's bytes can go to its place in any order, from whoever holds them.

Bytes that pass through unchanged move from the input file to the output file by the kernel
(`os.copy_file_range`: no Python buffer, and on filesystems that share extents no copy at all),
with read/write in chunks where the kernel refuses (across filesystems, other systems). Bytes
a reader already holds (the forward pass's weight rows) are written where they belong with
`pwrite`. Like `StreamingWriter` it fails loudly when a tensor is left short or written long.
"""

from __future__ import annotations

import errno
import os
import threading

from fp8stream.errors import InvalidCheckpointError
from fp8stream.io.header import OutputEntry, encode_header

COPY_STEP = 64 << 20  # bytes per kernel call: a signal is handled between two
FALLBACK_CHUNK = 4 << 20
_KERNEL_COPY = getattr(os, "copy_file_range", None)  # Linux; elsewhere the chunked fallback
# what the kernel answers where it cannot copy between these two files (then we read and write)
_REFUSED = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}


class PlacedWriter:
    """One output file, by positioned writes on `fd`: tensor bytes in any order (`write_at`,
    `copy_from`), from any thread, `write` appending to a tensor (the tail), the header whenever
    it is final (`write_header`: its room is fixed, formats/room.py), `finish`."""

    def __init__(self, fd: int, entries: list[OutputEntry], metadata: dict[str, str] | None, room: int = 0) -> None:
        self.fd = fd
        self.header_blob, self.infos = encode_header(entries, metadata, room)
        self._by_name = {info.name: info for info in self.infos}
        self._filled = dict.fromkeys(self._by_name, 0)  # bytes placed per tensor
        self._lock = threading.Lock()  # the head start's thread writes beside the run's
        self.bytes_written = 0
        self.kernel_copy = _KERNEL_COPY is not None  # False once the kernel refused: chunks from then on

    def relayout(self, entries: list[OutputEntry], metadata: dict[str, str] | None, room: int) -> None:
        """The final header (the method's choice made), before it is written: every byte placed
        so far must keep its place (a bug otherwise: formats/room.check_kept)."""
        blob, infos = encode_header(entries, metadata, room)
        by_name = {info.name: info for info in infos}
        with self._lock:
            moved = [n for n, done in self._filled.items() if done and by_name.get(n) != self._by_name[n]]
            if moved or len(blob) != len(self.header_blob):
                raise RuntimeError(f"internal error: {moved[0] if moved else 'the header'!r} moved after data "
                                   "was placed")
            self._filled = {n: self._filled.get(n, 0) for n in by_name}
            self.header_blob, self.infos, self._by_name = blob, infos, by_name

    def write_header(self) -> None:
        self._pwrite(self.header_blob, 0)

    def write_at(self, name: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Bytes [offset, offset + len) of tensor `name`; each byte of a tensor is placed once."""
        where = self._claim(name, offset, len(data))
        self._pwrite(data, where)

    def write(self, name: str, data: bytes | bytearray | memoryview) -> None:
        """Append to tensor `name` (the tail's scales: written once, in one piece)."""
        self.write_at(name, self._filled[name], data)

    def copy_from(self, in_fd: int, in_offset: int, name: str, offset: int, length: int) -> int:
        """`length` bytes of the input file at `in_offset` to bytes [offset, ..) of tensor `name`;
        returns where they start in the output file."""
        where = self._claim(name, offset, length)
        done = 0
        while done < length and self.kernel_copy:
            try:
                n = _KERNEL_COPY(in_fd, self.fd, min(COPY_STEP, length - done), in_offset + done, where + done)
            except OSError as e:
                if e.errno not in _REFUSED:
                    raise
                self.kernel_copy = False
                break
            if n == 0:
                raise InvalidCheckpointError(f"the input ends inside {name!r} (truncated)")
            done += n
        if done < length:
            self._copy_chunks(in_fd, in_offset + done, where + done, length - done, name)
        self._count(length)
        return where

    def _copy_chunks(self, in_fd: int, in_offset: int, out_offset: int, length: int, name: str) -> None:
        buf = bytearray(min(FALLBACK_CHUNK, length))
        done = 0
        while done < length:
            view = memoryview(buf)[:min(len(buf), length - done)]
            got = os.preadv(in_fd, [view], in_offset + done)
            if got <= 0:
                raise InvalidCheckpointError(f"the input ends inside {name!r} (truncated)")
            self._pwrite(view[:got], out_offset + done, count=False)
            done += got

    def finish(self) -> None:
        short = [name for name, info in self._by_name.items() if self._filled[name] != info.nbytes]
        if short:
            raise RuntimeError(f"output incomplete: {short[0]!r} not written")

    def _claim(self, name: str, offset: int, length: int) -> int:
        """The file offset of bytes [offset, offset + length) of `name`, counted as placed."""
        with self._lock:
            info = self._by_name.get(name)
            if info is None or offset < 0 or offset + length > info.nbytes:
                raise RuntimeError(f"no place for bytes {offset}:{offset + length} of {name!r}")
            self._filled[name] += length
            if self._filled[name] > info.nbytes:
                raise RuntimeError(f"too many bytes for {name!r}")
            return len(self.header_blob) + info.begin + offset

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self.bytes_written += nbytes

    def _pwrite(self, data: bytes | bytearray | memoryview, where: int, count: bool = True) -> None:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], where + done)
        if count:
            self._count(len(view))
