"""What `inspect` reads: a checkpoint's header(s) and the bytes of its few small tensors (scales,
markers), from a plain file, a zstd file, or a sharded folder / `*.index.json`.

A plain file is read with positioned reads of those tensors only; a zstd file cannot be seeked,
so it is decompressed once, front to back, keeping only the small tensors' bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fp8stream.errors import UsageError
from fp8stream.formats.shards import merged_header, shard_index
from fp8stream.io.header import Header, read_exactly
from fp8stream.io.reader import InputSource, TensorStream, open_positioned, read_input_header
from fp8stream.io.storage import locate

SMALL_BYTES = 1 << 16  # scales and markers are a few bytes; nothing larger is kept


@dataclass
class Checkpoint:
    """The whole model's header (merged over shards) and the small tensors' bytes by name."""

    path: str
    header: Header
    small: dict[str, bytes] = field(default_factory=dict)
    file_bytes: int = 0  # on disk, all shards together (compressed size for zstd)
    shards: int = 1
    compressed: bool = False


def read_checkpoint(path: str) -> Checkpoint:
    """Header(s) and small tensors of `path`: a file (plain or zstd), a folder or an index."""
    index = shard_index(locate(path))
    if index is None:
        return _read_file(path)
    parts = [_read_file(shard_at.path) for shard_at in index.shards.values()]
    small = {name: raw for part in parts for name, raw in part.small.items()}
    return Checkpoint(path, merged_header([p.header for p in parts]), small,
                      sum(p.file_bytes for p in parts), len(parts), any(p.compressed for p in parts))


def _read_file(path: str) -> Checkpoint:
    if path == "-":
        raise UsageError("inspect needs a file, a sharded folder or an index, not '-'")
    source = open_positioned(path)  # a URL: ranged requests for the header and the small tensors
    try:
        header = read_input_header(source)
        wanted = [t for t in header.tensors if 0 < t.nbytes <= SMALL_BYTES and t.numel <= 4096]
        small = _positioned(source, header, wanted) if not source.compressed else _streamed(source, header, wanted)
    finally:
        source.close()
    return Checkpoint(path, header, small, locate(path).stored().size, 1, source.compressed)


def _positioned(source: InputSource, header: Header, wanted: list) -> dict[str, bytes]:
    out = {}
    for info in wanted:
        source.stream.seek(header.data_start + info.begin)
        out[info.name] = read_exactly(source.stream, info.nbytes, "data")
    return out


def _streamed(source: InputSource, header: Header, wanted: list) -> dict[str, bytes]:
    names = {t.name for t in wanted}
    stream = TensorStream(source, header)
    out = {}
    for info in header.tensors:
        if info.name in names:
            out[info.name] = bytes(stream.read_all(info))
        else:
            for _ in stream.chunks(info):
                pass
    stream.finish()
    return out


def model_header(path: str) -> Header:
    """The whole model's header, merged over shards: no tensor data read (zstd: only its start)."""
    index = shard_index(locate(path))
    paths = [path] if index is None else [shard_at.path for shard_at in index.shards.values()]
    headers = []
    for p in paths:
        source = open_positioned(p)
        try:
            headers.append(read_input_header(source))
        finally:
            source.close()
    return headers[0] if index is None else merged_header(headers)
