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
from fp8stream.io.storage import Location, locate

INDEX_SUFFIX = ".safetensors.index.json"
MAX_INDEX_BYTES = 100_000_000


@dataclass
class ShardIndex:
    location: Location  # the index file
    folder_at: Location  # the folder it and its shards are in, located once
    weight_map: dict[str, str]
    metadata: dict
    shards: dict[str, Location]  # each shard file's name -> where it is, in first-appearance order

    @property
    def path(self) -> str:
        return self.location.path

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def folder(self) -> str:
        return self.folder_at.path


def shard_index(location: Location) -> ShardIndex | None:
    """The index `location` names (itself, or the only one in a folder), read and checked, with each
    shard located; None for a single file. A URL may name a folder (a key prefix) or an index in a
    store (docs/remote.md)."""
    index_at = _index_file(location)
    return None if index_at is None else _read_index(index_at)


def _index_file(location: Location) -> Location | None:
    path = location.path
    if path.endswith(INDEX_SUFFIX) and location.is_file():
        return location
    if not path.endswith(INDEX_SUFFIX) and location.is_dir():
        found = sorted(n for n in location.names() if n.endswith(INDEX_SUFFIX))
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise UsageError(f"{path}: is a folder with {what} *{INDEX_SUFFIX}; give a file or the index")
        return locate(location.child(found[0]))
    return None


def _read_index(location: Location) -> ShardIndex:
    """A weight_map of plain shard file names that all exist in the index's folder."""
    path = location.path
    try:
        doc = json.loads(location.read_small(MAX_INDEX_BYTES).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InvalidCheckpointError(f"{path}: not a readable JSON index ({e.__class__.__name__})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InvalidCheckpointError(f"{path}: index has no weight_map of tensor -> shard file")
    folder_at = locate(location.parent())
    present = folder_at.files_present(set(weight_map.values()))
    shards: dict[str, Location] = {}
    for shard in weight_map.values():
        if shard not in shards:
            if os.path.basename(shard) != shard or shard in (".", "..") or not shard:
                raise InvalidCheckpointError(f"{path}: shard name {shard!r} is not a file name in the index's folder")
            if shard not in present:
                raise InvalidCheckpointError(f"{path}: shard {shard} is missing")
            shards[shard] = locate(folder_at.child(shard))
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return ShardIndex(location, folder_at, weight_map, metadata, shards)


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
