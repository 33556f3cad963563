"""Open what `calibrate` was given: one file (or '-'), or a sharded folder / index whose shards
are checked against the index and merged into one header for whole-model decisions."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from fp8stream.formats.shards import ShardIndex, check_shard, merged_header, shard_index
from fp8stream.io.header import Header
from fp8stream.io.reader import InputSource, open_input, read_input_header, read_stream_header
from fp8stream.io.source import TensorSource
from fp8stream.io.storage import Location


@dataclass
class InputPart:
    """One file of the model: the single input, or one shard (`name`: its file name)."""

    name: str
    location: Location  # where it is read from
    source: InputSource
    header: Header
    head: bytes | None = None  # a stream's first bytes up to the data (length + header), for a spool


@dataclass
class ModelInput:
    parts: list[InputPart]
    whole: Header  # every tensor of the model
    index: ShardIndex | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def sharded(self) -> bool:
        return self.index is not None

    @property
    def bytes_in(self) -> int:
        return sum(p.header.file_bytes for p in self.parts)

    def tensor_source(self) -> TensorSource | None:
        """By-name positioned reads of any tensor; None for a pipe or compressed input."""
        if self.index is not None:
            shards = self.index.shards
            return TensorSource(self.whole, {t: shards[s].path for t, s in self.index.weight_map.items()})
        part = self.parts[0]
        if part.source.path is None or part.source.compressed:
            return None
        if part.source.size is None and part.location.local_path is not None:  # a FIFO
            return None
        return TensorSource.for_file(part.source.path, part.header)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "ModelInput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_part(stack: contextlib.ExitStack, location: Location, name: str) -> InputPart:
    source = open_input(location)
    stack.callback(source.close)
    if source.size is not None and not source.compressed:
        return InputPart(name, location, source, read_input_header(source))
    header, head = read_stream_header(source)  # a stream's header bytes cannot be read again: a spool needs them
    return InputPart(name, location, source, header, head)


def open_model(location: Location) -> ModelInput:
    """The input's files, opened and their headers read (each file's stream just after its header)."""
    index = shard_index(location)
    stack = contextlib.ExitStack()
    try:
        if index is None:
            part = _open_part(stack, location, os.path.basename(location.path))
            return ModelInput([part], part.header, None, stack)
        parts = []
        for shard, shard_at in index.shards.items():
            parts.append(_open_part(stack, shard_at, shard))
            check_shard(index, shard, parts[-1].header)
        return ModelInput(parts, merged_header([p.header for p in parts]), index, stack)
    except BaseException:
        stack.close()
        raise
