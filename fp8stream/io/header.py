"""The safetensors header: parse and validate it ourselves, and lay an output header out.

Layout: 8-byte little-endian header length N, N bytes of JSON, then the data. Every check runs
before anything is allocated from a number in the file, so a hostile header ends in an
InvalidCheckpointError, never a huge allocation or a traceback.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from fp8stream.errors import InvalidCheckpointError
from fp8stream.io.dtypes import DTYPE_BITS, nbytes_of
from fp8stream.io.sniff import SNIFF_BYTES, describe_bytes

# The safetensors library refuses headers above 100 MB; so do we, before reading them.
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"
_MAX_DIMS = 32


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; offsets are relative to the start of the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Header:
    """A validated header: tensors in data order, the file-level metadata and sizes."""

    tensors: list[TensorInfo]
    metadata: dict[str, str] | None
    header_bytes: int  # N, the JSON length including padding
    by_name: dict[str, TensorInfo] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_name = {t.name: t for t in self.tensors}

    @property
    def data_start(self) -> int:
        return 8 + self.header_bytes

    @property
    def data_bytes(self) -> int:
        return self.tensors[-1].end if self.tensors else 0

    @property
    def file_bytes(self) -> int:
        return self.data_start + self.data_bytes

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def get(self, name: str) -> TensorInfo | None:
        return self.by_name.get(name)


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidCheckpointError(f"header names {key!r} twice")
        out[key] = value
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_unicode(text: str) -> bool:
    """False for strings with lone surrogates: JSON escapes allow them, UTF-8 cannot write them back."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_entry(name: str, entry: object) -> TensorInfo:
    if not _is_unicode(name):
        raise InvalidCheckpointError(f"tensor name {name.encode('utf-8', 'replace')[:40]!r} is not valid Unicode")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise InvalidCheckpointError(f"tensor {name!r}: entry needs exactly dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise InvalidCheckpointError(f"tensor {name!r}: unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS or not all(_is_int(d) and d >= 0 for d in shape):
        raise InvalidCheckpointError(f"tensor {name!r}: shape must be a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        raise InvalidCheckpointError(f"tensor {name!r}: data_offsets must be two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise InvalidCheckpointError(f"tensor {name!r}: data_offsets end before they begin")
    expected = nbytes_of(dtype, tuple(shape))
    if expected is None or expected != end - begin:
        raise InvalidCheckpointError(
            f"tensor {name!r}: {dtype} {shape} does not fill its {end - begin} bytes of data"
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)


def parse_header(raw: bytes, data_bytes: int | None = None) -> Header:
    """Validate header JSON bytes. `data_bytes` (file size minus header) is checked when known."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCheckpointError("header is not UTF-8 text") from None
    try:
        doc = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except InvalidCheckpointError:
        raise
    except (ValueError, RecursionError):
        raise InvalidCheckpointError("header is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidCheckpointError("header is not a JSON object")
    metadata = doc.pop(METADATA_KEY, None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise InvalidCheckpointError("__metadata__ must map strings to strings")
    if metadata is not None and not all(_is_unicode(k) and _is_unicode(v) for k, v in metadata.items()):
        raise InvalidCheckpointError("__metadata__ holds text that is not valid Unicode (lone surrogate escapes)")
    tensors = [_parse_entry(name, entry) for name, entry in doc.items()]
    # Data order; zero-length tensors keep their header order among equal offsets.
    tensors.sort(key=lambda t: (t.begin, t.end))
    position = 0
    for t in tensors:
        if t.begin != position:
            what = "overlaps the previous one" if t.begin < position else "leaves a gap before it"
            raise InvalidCheckpointError(f"tensor {t.name!r}: data {what}")
        position = t.end
    if data_bytes is not None and position != data_bytes:
        raise InvalidCheckpointError(
            f"header describes {position} bytes of data but the file holds {data_bytes}"
            + (" (truncated?)" if data_bytes < position else "")
        )
    return Header(tensors=tensors, metadata=metadata, header_bytes=len(raw))


def read_exactly(stream: BinaryIO, n: int, what: str) -> bytes:
    """Read n bytes or fail as truncated (streams may return short reads)."""
    chunks = []
    remaining = n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise InvalidCheckpointError(f"file ends inside the {what} (truncated)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _not_safetensors(prefix: bytes, stream: BinaryIO, detail: str) -> str:
    """The error line: what the bytes look like (text, PNG, JSON...) when known, and `detail`
    unless it is a header length read from text (a meaningless number)."""
    what = describe_bytes(prefix + stream.read(SNIFF_BYTES - len(prefix)))
    if what is None:
        return f"not a safetensors file ({detail})"
    return f"not a safetensors file: it looks like {what}" + ("" if "header length" in detail else f" ({detail})")


def read_header(stream: BinaryIO, file_bytes: int | None = None) -> Header:
    """Read and validate the header at the stream's position; `file_bytes` when the size is known."""
    prefix = stream.read(8)
    if len(prefix) < 8:
        raise InvalidCheckpointError(_not_safetensors(prefix, stream, "shorter than 8 bytes"))
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES:
        raise InvalidCheckpointError(_not_safetensors(prefix, stream, f"header length {length} is over 100 MB"))
    if length < 2:
        raise InvalidCheckpointError(_not_safetensors(prefix, stream, "header length too small"))
    if file_bytes is not None and 8 + length > file_bytes:
        raise InvalidCheckpointError(f"header length {length} is larger than the file (truncated?)")
    raw = read_exactly(stream, length, "header")
    data_bytes = None if file_bytes is None else file_bytes - 8 - length
    return parse_header(raw, data_bytes)


@dataclass(frozen=True)
class OutputEntry:
    """One tensor of an output header: its place in the output's data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def encode_header(entries: list[OutputEntry], metadata: dict[str, str] | None,
                  room: int = 0) -> tuple[bytes, list[TensorInfo]]:
    """Lay an output header out: the 8-byte prefix plus JSON padded with spaces to `room` bytes
    (a header planned before a choice it depends on: formats/room.py; a JSON that needs more is a
    bug, since the data's places were fixed by the room) and to a multiple of 8 (the safetensors
    format allows trailing spaces).

    Returns the bytes and the TensorInfo of each entry (its offsets), in data order.
    """
    doc: dict[str, object] = {}
    if metadata is not None:
        doc[METADATA_KEY] = dict(metadata)
    infos = []
    position = 0
    for e in entries:
        if e.name in doc:
            raise ValueError(f"duplicate output tensor {e.name!r}")
        doc[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [position, position + e.nbytes]}
        infos.append(TensorInfo(e.name, e.dtype, tuple(e.shape), position, position + e.nbytes))
        position += e.nbytes
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if room and len(text) > room:
        raise RuntimeError(f"internal error: the output header needs {len(text)} bytes, its room is {room}")
    text += b" " * (max(room, len(text)) - len(text))
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, infos
