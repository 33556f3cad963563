"""Any tensor of a model by name, over one file or a sharded folder (mergekit's LazyTensorLoader
is the model): `get(name)` hides which shard holds it. Positioned reads only, never a mapping
(touched pages of a mapping count in RSS; page-faulting a cold mapping is slow). Each shard is
opened on first use and stays open until `close`. A `tap`, while set, is handed every row range
read (the copy takes the forward pass's reads: pipeline/placed_run.py), from the reading thread,
and the rows a reader then holds for use (`held`: on a GPU, its one copy there).
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Protocol

from fp8stream.io.header import Header, TensorInfo
from fp8stream.io.reader import CHUNK_BYTES, LazyFile


class ReadTap(Protocol):
    """What sees a source's reads while it is set (the copy at fixed places: pipeline/placed_run.py)."""

    def read(self, name: str, start: int, stop: int, data: bytearray) -> None:
        """Rows [start, stop) of `name` as read from the file, from the reading thread."""

    def held(self, name: str, start: int, stop: int, rows: Any) -> None:
        """The same rows as the reader holds them for use: their bytes on the host, or a uint8
        tensor on a GPU (usable on the current stream), from the thread that uses them."""


class TensorSource:
    """By-name reads over files: `paths[name]` is the file holding tensor `name`; `header` lists
    every tensor of the model (offsets relative to their own file)."""

    def __init__(self, header: Header, paths: dict[str, str]) -> None:
        self.header = header
        self._paths = paths
        self._files: dict[str, LazyFile] = {}
        self._lock = threading.Lock()
        self.tap: ReadTap | None = None  # every read_rows, and the rows held, while set
        self.bytes_read = 0  # by every read so far (what --verify's note counts as read again)

    @classmethod
    def for_file(cls, path: str, header: Header) -> "TensorSource":
        return cls(header, {t.name: path for t in header.tensors})

    def __enter__(self) -> "TensorSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            f.source.close()
        self._files.clear()

    def names(self) -> list[str]:
        return [t.name for t in self.header.tensors]

    def info(self, name: str) -> TensorInfo:
        info = self.header.get(name)
        if info is None:
            raise KeyError(name)
        return info

    def path_of(self, name: str) -> str:
        """The file that holds tensor `name`."""
        return self._paths[name]

    def _file(self, name: str) -> LazyFile:
        path = self._paths[name]
        with self._lock:  # the forward pass reads ahead from several threads
            f = self._files.get(path)
            if f is None:
                f = self._files[path] = LazyFile(path)
        return f

    def chunks(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The tensor's bytes, at most chunk_bytes at a time."""
        f = self._file(name)
        for chunk in f.read_chunks(f.header.get(name), chunk_bytes):
            self._count(len(chunk))
            yield chunk

    def _count(self, nbytes: int) -> None:
        with self._lock:  # the forward pass reads from several threads
            self.bytes_read += nbytes

    def get(self, name: str) -> bytes:
        """The whole tensor's bytes (for small tensors, or one layer's weight at a time)."""
        return b"".join(self.chunks(name))

    def read_rows(self, name: str, start: int, stop: int) -> bytearray:
        """Rows [start, stop) of a tensor of 1 or more dimensions, read straight into one
        writable buffer (torch can wrap it without a copy). Safe to call from several threads."""
        f = self._file(name)
        info = f.header.get(name)
        rows = info.shape[0] if info.shape else 1
        if not 0 <= start <= stop <= rows:
            raise IndexError(f"{name}: rows {start}:{stop} outside 0:{rows}")
        row_bytes = info.nbytes // rows if rows else 0
        if start == stop:
            return bytearray()
        part = TensorInfo(info.name, info.dtype, info.shape, info.begin + start * row_bytes,
                          info.begin + stop * row_bytes)
        out = bytearray(part.nbytes)
        f.read_into(part, memoryview(out))
        self._count(part.nbytes)
        if self.tap is not None:
            self.tap.read(name, start, stop, out)
        return out

    def held(self, name: str, start: int, stop: int, rows: Any) -> None:
        """Rows [start, stop) of `name`, read by `read_rows`, as the reader now holds them: the
        tap's, where one is set (ReadTap.held)."""
        if self.tap is not None:
            self.tap.held(name, start, stop, rows)

