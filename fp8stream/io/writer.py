"""A streaming safetensors writer: the whole header first, then each tensor's bytes in order.

Like gguf's writer, it keeps an explicit state of what may be written next, so a bug that
writes tensors out of order, short or long fails loudly instead of producing a corrupt file.
"""

from __future__ import annotations

import enum
from typing import BinaryIO

from fp8stream.io.header import OutputEntry, TensorInfo, encode_header


class WriterState(enum.Enum):
    EMPTY = "empty"  # nothing written yet: the header comes next
    DATA = "data"  # header out: tensor bytes in header order
    DONE = "done"  # every byte the header promised is out


class StreamingWriter:
    """Writes a safetensors stream whose layout is fixed before the first byte."""

    def __init__(self, sink: BinaryIO, entries: list[OutputEntry], metadata: dict[str, str] | None,
                 room: int = 0) -> None:
        """`room`: the JSON header's padded length (io/header.encode_header)."""
        self.sink = sink
        self.header_blob, self.infos = encode_header(entries, metadata, room)
        self.state = WriterState.EMPTY
        self._index = 0  # the tensor being written
        self._written = 0  # bytes of it written so far
        self.bytes_written = 0

    def write_header(self) -> None:
        if self.state is not WriterState.EMPTY:
            raise RuntimeError("header already written")
        self._put(self.header_blob)
        self.state = WriterState.DATA
        self._skip_empty()

    def expected(self) -> TensorInfo | None:
        """The tensor the writer takes next, or None when all are out."""
        return self.infos[self._index] if self.state is WriterState.DATA else None

    def write(self, name: str, data: bytes | memoryview) -> None:
        """Append bytes of tensor `name`, which must be the one expected next."""
        info = self.expected()
        if info is None or info.name != name:
            raise RuntimeError(f"writer expected {info.name if info else 'nothing'!r}, got {name!r}")
        if self._written + len(data) > info.nbytes:
            raise RuntimeError(f"too many bytes for {name!r}")
        self._put(data)
        self._written += len(data)
        if self._written == info.nbytes:
            self._index += 1
            self._written = 0
            self._skip_empty()

    def finish(self) -> None:
        if self.state is not WriterState.DONE:
            missing = self.expected()
            raise RuntimeError(f"output incomplete: {missing.name if missing else 'header'!r} not written")

    def _skip_empty(self) -> None:
        while self._index < len(self.infos) and self.infos[self._index].nbytes == 0:
            self._index += 1
        if self._index == len(self.infos):
            self.state = WriterState.DONE

    def _put(self, data: bytes | memoryview) -> None:
        self.sink.write(data)
        self.bytes_written += len(data)
