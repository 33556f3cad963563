"""Where a rewrite writes: OUT, located once by rewrite.py, checked before any data moves (a dry
run gets the same refusals) and opened for the run: one sink, or a folder of shards."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from fp8stream.errors import UsageError
from fp8stream.io.compression import ZstdSettings
from fp8stream.io.storage import STDIO, Location
from fp8stream.pipeline.inputs import ModelInput


@dataclass(frozen=True)
class OutputTarget:
    """OUT as located, and how it is written."""

    location: Location
    force: bool  # replace an output that exists
    zstd: ZstdSettings | None  # compress it


def check_output(target: OutputTarget, model: ModelInput, nbytes: int, verify: bool) -> None:
    """Refuse what would fail after the data moved: an existing OUT (exit 2), OUT = IN, no room."""
    output = target.location
    if output is STDIO:  # stdout: nothing stands there; a sharded model is refused when opened
        return
    if verify and output.local_path is None:  # a URL: the shadow the self-check reads has holes
        raise UsageError(f"{output.path}: --verify re-reads the whole output, which an upload cannot give "
                         "before it is published; run `fp8stream verify IN OUT` once it is")
    if model.index is not None:
        output.check_folder_target(model.index.folder, target.force)
        return
    output.check_target(model.parts[0].source.path, target.force)
    if target.zstd is None:  # a compressed size is not known before the end
        output.reserve(nbytes)


def open_outputs(stack: contextlib.ExitStack, target: OutputTarget, model: ModelInput):
    """(the sharded output or None, one open sink per file of the model), closed by `stack`."""
    if model.index is None:
        sink = target.location.open_sink(target.zstd)
        return None, [(sink, stack.enter_context(sink))]
    sharded = stack.enter_context(target.location.open_folder_target(model.index.folder, target.force, target.zstd))
    return sharded, [sharded.open(part.name) for part in model.parts]
