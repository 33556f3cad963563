"""Sharded checkpoints: a `*.safetensors.index.json` whose `weight_map` names each tensor's shard.

Input is the index file or a folder holding exactly one. Every shard is streamed in turn; the
whole model's inventory (flavours, presets, groups) comes from all shard headers merged; each
scale goes into the shard that holds its layer, and a new index with the new `weight_map` is
written last.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from fp8stream.errors import InvalidCheckpointError, UsageError
from fp8stream.io.header import Header
from fp8stream.io.storage import is_remote

INDEX_SUFFIX = ".safetensors.index.json"
MAX_INDEX_BYTES = 100_000_000


@dataclass
class ShardIndex:
    path: str  # the index file
    folder: str
    weight_map: dict[str, str]
    metadata: dict
    shards: list[str]  # shard file names, in first-appearance order

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def shard_path(self, shard: str) -> str:
        """Where shard file `shard` is: a path, or a URL for an index in a store."""
        return _join(self.folder, shard)


def find_index(path: str) -> str | None:
    """The index file `path` names (itself, or the only one in a folder), or None for a plain
    file. A URL may name a folder (a key prefix) or an index in a store (docs/remote.md)."""
    if path.endswith(INDEX_SUFFIX) and _isfile(path):
        return path
    if not path.endswith(INDEX_SUFFIX) and _isdir(path):
        found = sorted(n for n in _names_in(path) if n.endswith(INDEX_SUFFIX))
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise UsageError(f"{path}: is a folder with {what} *{INDEX_SUFFIX}; give a file or the index")
        return _join(path, found[0])
    return None


def read_index(path: str) -> ShardIndex:
    """Parse and check an index: a weight_map of plain shard file names that all exist."""
    try:
        doc = json.loads(_read_index_bytes(path).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InvalidCheckpointError(f"{path}: not a readable JSON index ({e.__class__.__name__})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InvalidCheckpointError(f"{path}: index has no weight_map of tensor -> shard file")
    folder = _parent(path)
    present = set(_names_in(folder)) if is_remote(path) else None  # one listing, not a request per shard
    shards: list[str] = []
    for shard in weight_map.values():
        if shard not in shards:
            if os.path.basename(shard) != shard or shard in (".", "..") or not shard:
                raise InvalidCheckpointError(f"{path}: shard name {shard!r} is not a file name in the index's folder")
            if not (shard in present if present is not None else os.path.isfile(os.path.join(folder, shard))):
                raise InvalidCheckpointError(f"{path}: shard {shard} is missing")
            shards.append(shard)
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return ShardIndex(path, folder, weight_map, metadata, shards)


def _isfile(path: str) -> bool:
    if is_remote(path):
        from fp8stream.remote.files import is_file
        return is_file(path)
    return os.path.isfile(path)


def _isdir(path: str) -> bool:
    if is_remote(path):
        from fp8stream.remote.files import is_dir
        return is_dir(path)
    return os.path.isdir(path)


def _names_in(folder: str) -> list[str]:
    if is_remote(folder):
        from fp8stream.remote.files import names_in
        return names_in(folder)
    return os.listdir(folder)


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name if is_remote(folder) else os.path.join(folder, name)


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0] if is_remote(path) else os.path.dirname(os.path.abspath(path))


def _read_index_bytes(path: str) -> bytes:
    if is_remote(path):
        from fp8stream.remote.files import read_small
        return read_small(path, MAX_INDEX_BYTES)
    if os.path.getsize(path) > MAX_INDEX_BYTES:
        raise InvalidCheckpointError(f"{path}: index is over 100 MB")
    with open(path, "rb") as f:
        return f.read()


def check_shard(index: ShardIndex, shard: str, header: Header) -> None:
    """Every tensor of the shard is mapped to it, and every tensor mapped to it is there."""
    mapped = {name for name, s in index.weight_map.items() if s == shard}
    names = set(header.by_name)
    if mapped != names:
        odd = sorted(mapped ^ names)[0]
        raise InvalidCheckpointError(f"{shard}: weight_map and shard disagree about tensor {odd!r}")


def merged_header(headers: list[Header]) -> Header:
    """One header listing every shard's tensors (for whole-model decisions; offsets are per shard)."""
    tensors = [t for h in headers for t in h.tensors]
    return Header(tensors=tensors, metadata=headers[0].metadata if headers else None, header_bytes=0)


def output_index(index: ShardIndex, shard_entries: dict[str, list[str]], total_size: int) -> bytes:
    """The new index: the input's metadata (total_size updated), weight_map from the output shards."""
    metadata = dict(index.metadata)
    metadata["total_size"] = total_size
    weight_map = {name: shard for shard, names in shard_entries.items() for name in names}
    doc = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")
