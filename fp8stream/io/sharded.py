"""One object owns a sharded output: the temp folder beside OUT, one writer sink per shard, the
index written last, and the rename that makes OUT appear complete or not at all (the models:
gguf's writer splitting into shards, mergekit's TensorWriter.finalize).

Every shard's sink stays open until the whole model is streamed, because a shard's tail (its
layers' activation scales) is known only then; data is written as it streams, nothing is held.
"""

from __future__ import annotations

import contextlib
import os
from typing import BinaryIO

from fp8stream.io.atomic import AtomicFolder, AtomicOutput, check_output_folder
from fp8stream.io.compression import ZstdSettings
from fp8stream.io.sink import OutputSink


class ShardedOutput:
    """The `FolderTarget` of a local folder (io.storage); a URL's is remote/'s.
    `with ShardedOutput(OUT, input_folder, force) as out:` then `out.open(shard)` per shard
    (in any order), `out.finalize(index_name, blob)` once all are complete."""

    def __init__(self, target: str, input_folder: str, force: bool, zstd: ZstdSettings | None = None) -> None:
        check_output_folder(target, input_folder, force)
        self.target, self.force, self.zstd = target, force, zstd
        self._stack = contextlib.ExitStack()
        self._folder: str | None = None
        self.sinks: dict[str, OutputSink] = {}

    def __enter__(self) -> "ShardedOutput":
        self._folder = self._stack.enter_context(AtomicFolder(self.target, replace=self.force))
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._stack.__exit__(*exc)

    def open(self, shard: str) -> tuple[OutputSink, BinaryIO]:
        """An open sink for shard file `shard` inside the temp folder, and its stream; it is
        closed (its temp file renamed into the folder on success) when the whole output closes."""
        assert self._folder is not None
        path = os.path.join(self._folder, shard)
        sink = OutputSink(path, AtomicOutput(path, final=False), self.zstd)
        stream = self._stack.enter_context(sink)
        self.sinks[shard] = sink
        return sink, stream

    def finalize(self, index_name: str, blob: bytes) -> None:
        """The index, written last, beside the shards."""
        assert self._folder is not None
        with AtomicOutput(os.path.join(self._folder, index_name), final=False) as f:
            f.write(blob)
