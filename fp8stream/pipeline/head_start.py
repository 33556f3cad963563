"""The head start: the data that passes through unchanged copied to its place in OUT before the
method exists.

Creating and preparing the method takes seconds before anything else can happen (torch and
diffusers imported, the model's code, the meta pass). The data's places in the output do not
wait for it (formats/room.py), so where IN and OUT are local files written at fixed places
(pipeline/placed_run.py) and the page cache can hold IN, a thread copies every tensor that passes
through unchanged (FP8 weights too: their bytes pass through) by the kernel to its place, in data
order, meanwhile. The run then reads the weights from the page cache: the forward pass's reads
and the loop's rows (checked, shown to the method: `Placer.seen`) find them there, and whatever
the copy placed first is not written again (`Placements`). Markers, scales and the scalars the
calibration reads are the run's (read whole, rewritten); the header is written once the method
has chosen, into its room. Where the cache cannot hold IN, there is no head start: the pass
reads first and the copy takes its reads, so each byte still comes from the disk once.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import BinaryIO

from fp8stream.formats.plan_types import RewritePlan
from fp8stream.io.header import Header
from fp8stream.io.overlap import start_thread
from fp8stream.io.placed import COPY_STEP, PlacedWriter
from fp8stream.io.sink import OutputSink
from fp8stream.io.writeback import FilledWriteback, start_writeback
from fp8stream.memory import available_memory, cgroup_memory_limit, run_memory
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.pipeline.inputs import InputPart, ModelInput
from fp8stream.pipeline.loop import read_whole
from fp8stream.pipeline.outputs import OutputTarget, open_outputs
from fp8stream.pipeline.placed_run import Placements, check_unchanged, copy_shares_reads, row_split


def cache_holds(nbytes: int, header: Header, settings: CalibrationSettings) -> bool:
    """Whether the page cache can hold `nbytes` of input through the run: below half of what the
    kernel says is available, and below the memory cgroup's limit less the run's own estimate
    (memory.run_memory) where there is a limit. Else the run's reads would evict the copy's."""
    limit = cgroup_memory_limit()
    return 2 * nbytes < available_memory() and (limit is None or nbytes < limit - run_memory(header.tensors,
                                                                                             settings))


class HeadStart:
    """The thread copying each file's passing-through tensors to their places (`plans`: made
    before the method, their data places fixed); `writer(i, plan)` hands file i's writer to the
    run with the final plan's header; `join` waits for the copy, raising what stopped it. `start`
    once `stop` is registered to run on failure."""

    def __init__(self, parts: list[InputPart], plans: list[RewritePlan], fds: list[int]) -> None:
        self.placements = Placements()
        self._writers = [PlacedWriter(fd, p.entries, p.metadata, p.header_room) for p, fd in zip(plans, fds,
                                                                                                 strict=True)]
        self._work = list(zip(parts, plans, self._writers, strict=True))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fp8stream head start", daemon=True)

    def start(self) -> None:
        """Begin the copy (once `stop` is sure to run if the run fails: OUT's fd must outlive it)."""
        start_thread(self._thread)

    def writer(self, index: int, plan: RewritePlan) -> PlacedWriter:
        """File `index`'s writer, its header now `plan`'s (the method has chosen); what was
        placed keeps its place (checked)."""
        self._raise()
        writer = self._writers[index]
        writer.relayout(plan.entries, plan.metadata, plan.header_room)
        return writer

    def join(self) -> None:
        """Wait until every tensor the copy claimed is in place; raise what stopped it, or an
        input that changed size meanwhile (the run's own check may have come before the copy's end)."""
        self._thread.join()
        self._raise()
        for part, _, _ in self._work:
            check_unchanged(part)

    def stop(self) -> None:
        """The run failed or was interrupted: the copy stops after its current step."""
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        try:
            for part, plan, writer in self._work:
                filled = FilledWriteback(writer.fd)
                for info in plan.header.tensors:
                    if self._stop.is_set():
                        return
                    if not read_whole(plan, info.name):
                        self._copy(part, plan, writer, info.name, filled)
            # the rest goes to the disk too: the last part of each copy and what others placed meanwhile
            for _, _, writer in self._work:
                start_writeback(writer.fd)
        except BaseException as e:  # raised in the run's thread by join (or writer): one line there
            self._error = e

    def _copy(self, part: InputPart, plan: RewritePlan, writer: PlacedWriter, name: str,
              filled: FilledWriteback) -> None:
        """The rows of tensor `name` nobody placed yet, by the kernel, a step at a time, sent to
        the disk as the copy goes (`filled`): the pages go while the run works, not all in the
        final fsync (background writeback starts at a tenth of the RAM dirty: a 12 GB output stayed
        in the cache of a 128 GB machine and the fsync took 6.3 s, docs/speed.md; 2-block Flux-dev
        on the 2-core machine, simulate: 0.97x wall with it)."""
        info = plan.header.by_name[name]
        rows, row_bytes = row_split(info)
        at = plan.header.data_start + info.begin
        in_fd = part.source.stream.fileno()
        for a, b in self.placements.claim(name, 0, rows):
            for offset in range(a * row_bytes, b * row_bytes, COPY_STEP):
                if self._stop.is_set():
                    return
                length = min(COPY_STEP, b * row_bytes - offset)
                filled.filled_to(writer.copy_from(in_fd, at + offset, plan.out_names[name], offset, length) + length)


@dataclass
class OpenOutputs:
    """OUT opened before the method exists, the head start copying into it; `held`: the stack
    whose exit discards OUT (the copy stopped first) until the run takes it over."""

    sharded: object | None  # io.sharded.ShardedOutput
    sinks: list[tuple[OutputSink, BinaryIO]]
    head: HeadStart
    held: contextlib.ExitStack


def open_early(held: contextlib.ExitStack, target: OutputTarget | None, model: ModelInput, plans: list[RewritePlan],
               verify: bool, settings: CalibrationSettings) -> OpenOutputs | None:
    """OUT opened now and the head start begun where the run will write local files at fixed
    places (placed_run.copy_shares_reads), each file's data places are fixed before the method
    (`plans`: made before it, formats/room.py) and the page cache can hold IN; else None, nothing
    opened (a dry run: `target` None)."""
    if target is None or not copy_shares_reads(model, target, verify) or not all(p.data_fixed for p in plans) \
            or not cache_holds(model.bytes_in, model.whole, settings):
        return None
    sharded, sinks = open_outputs(held, target, model)
    fds = [sink.file_descriptor() for sink, _ in sinks]
    assert None not in fds, "copy_shares_reads promised local, uncompressed output files"
    head = HeadStart(model.parts, plans, fds)
    held.callback(head.stop)  # before OUT is discarded (the stack unwinds backwards)
    head.start()
    return OpenOutputs(sharded, sinks, head, held)


def take_outputs(stack: contextlib.ExitStack, early: OpenOutputs | None, target: OutputTarget, model: ModelInput):
    """(the sharded output or None, one open sink per file, the head start or None) for the run,
    closed by `stack`: those opened early (`stack` now completes or discards them), else opened now."""
    if early is None:
        return *open_outputs(stack, target, model), None
    stack.enter_context(early.held.pop_all())
    return early.sharded, early.sinks, early.head
