"""Sharded copies of test checkpoints: shards and a `*.safetensors.index.json`, the layout a hub
repository has, cut from one file with every tensor's bytes as they were."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from fp8stream.io.reader import LazyFile
from fp8stream.synthetic.checkpoint import write_checkpoint
from tests.conftest import small_model_tensors


def write_raw(path: Path, tensors: list) -> None:
    """A safetensors file from (TensorInfo, bytes) pairs, bytes as they were."""
    header, offset = {}, 0
    for info, data in tensors:
        header[info.name] = {"dtype": info.dtype, "shape": list(info.shape),
                             "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"".join(d for _, d in tensors))


def shard_file(src: Path, folder: Path, stem: str = "model") -> Path:
    """`src` cut in two shards plus an index, in `folder` (made); returns the folder."""
    folder.mkdir(parents=True)
    with LazyFile(str(src)) as f:
        tensors = [(t, f.read(t)) for t in f.header.tensors]
    half = len(tensors) // 2
    weight_map = {}
    for shard, part in ((f"{stem}-00001-of-00002.safetensors", tensors[:half]),
                        (f"{stem}-00002-of-00002.safetensors", tensors[half:])):
        write_raw(folder / shard, part)
        weight_map.update({t.name: shard for t, _ in part})
    (folder / f"{stem}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def sharded_model(folder: Path, seed: int = 0) -> Path:
    """The small test model (seeded) as a sharded folder."""
    single = folder.parent / f".single-{folder.name}.safetensors"
    write_checkpoint(str(single), small_model_tensors(seed=seed))
    shard_file(single, folder)
    single.unlink()
    return folder
