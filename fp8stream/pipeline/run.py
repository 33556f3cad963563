"""The real run over every file of a model: headers out, each file streamed in turn through the
method, then (once the whole model has been seen) each file's tail of scales, its self-check,
and the sink completed. Sinks are owned by the caller (one file, or an io.sharded.ShardedOutput).

Where every input and output is a local file (`ModelView.copy_takes_reads`, decided once by
pipeline/placed_run.copy_shares_reads), on any device, the files are written at fixed places
instead (pipeline/placed_run.py: one read of each input byte, the forward pass's reads shared
with the copy, the rest copied by the kernel); --verify keeps the stream, which hashes every
tensor as it reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Mapping

from fp8stream import verify
from fp8stream.formats.plan_types import LayerPlan, RewritePlan
from fp8stream.io.dtypes import f32_bytes
from fp8stream.io.hashing import HashingStream
from fp8stream.io.placed import PlacedWriter
from fp8stream.io.reader import TensorStream
from fp8stream.io.sink import OutputSink
from fp8stream.io.writer import StreamingWriter
from fp8stream.methods.interface import CalibrationMethod, MethodPlan, ModelView
from fp8stream.pipeline.check import check_written
from fp8stream.pipeline.head_start import HeadStart
from fp8stream.pipeline.inputs import ModelInput
from fp8stream.pipeline.loop import Feed, StreamState, facts_from_state, stream_file
from fp8stream.pipeline.placed_run import PlacedFile, Placer, place_file
from fp8stream.pipeline.scale_resolution import LayerFacts, Resolved, to_estimate
from fp8stream.progress import bar as progress_bar
from fp8stream.scales.estimate import ScaleEstimate


@dataclass
class FileRun:
    """One output file being written."""

    name: str
    plan: RewritePlan
    sink: OutputSink
    writer: StreamingWriter | PlacedWriter
    stream: TensorStream | HashingStream | None  # None: written at fixed places (no --verify there)


@dataclass
class StreamResult:
    files: list[FileRun]
    facts: dict[str, LayerFacts]
    out_weight_only: dict[str, bool]
    estimates: dict[str, ScaleEstimate]
    peak_vram_bytes: int | None = None


@dataclass(frozen=True)
class RunSettings:
    device: str
    keep_weight_only: bool
    overwrite_scales: bool
    verify: bool
    progress: bool


def stream_model(model: ModelInput, plans: list[RewritePlan], calibrated: list[LayerPlan], view: ModelView,
                 method: CalibrationMethod, method_plan: MethodPlan, sinks: list[tuple[OutputSink, BinaryIO]],
                 settings: RunSettings, head: HeadStart | None = None) -> StreamResult:
    """Every file's header and data out, in file order; the method sees the whole model. `head`:
    the copy begun before the method (pipeline/head_start.py), where the files are placed."""
    on_cuda = settings.device == "cuda"  # its peak was reset before method.prepare (rewrite.py)
    state = StreamState()
    assert view.copy_takes_reads or head is None
    if view.copy_takes_reads:
        files = _place_model(model, plans, view, method, method_plan, sinks, settings, state, head)
    else:
        files = [_stream_part(part, plan, sink, out, method, method_plan, settings, state, len(plans))
                 for part, plan, (sink, out) in zip(model.parts, plans, sinks, strict=True)]
    facts = facts_from_state(calibrated, state)
    estimates = method.scales(view, to_estimate(calibrated, facts, settings.overwrite_scales))
    peak = _peak_vram() if on_cuda else None
    return StreamResult(files, facts, state.out_weight_only, estimates, peak)


def _bar_label(part_name: str, files: int) -> str:
    return "copying" if files == 1 else f"copying {part_name}"


def _stream_part(part, plan: RewritePlan, sink: OutputSink, out: BinaryIO, method: CalibrationMethod,
                 method_plan: MethodPlan, settings: RunSettings, state: StreamState, files: int) -> FileRun:
    """One file's header and data out, front to back, through the method."""
    writer = StreamingWriter(out, plan.entries, plan.metadata, plan.header_room)
    writer.write_header()
    stream = TensorStream(part.source, part.header)
    if settings.verify:
        stream = HashingStream(stream, keep_raw=verify.needs_raw)
    with progress_bar(_bar_label(part.name, files), part.header.data_bytes, "B", settings.progress) as bar:
        stream_file(stream, plan, Feed(method, method_plan, settings.device, settings.keep_weight_only, bar),
                    writer, state)
    return FileRun(part.name, plan, sink, writer, stream)


def _place_model(model: ModelInput, plans: list[RewritePlan], view: ModelView, method: CalibrationMethod,
                 method_plan: MethodPlan, sinks: list[tuple[OutputSink, BinaryIO]], settings: RunSettings,
                 state: StreamState, head: HeadStart | None = None) -> list[FileRun]:
    """Every file's header, then the method's reads by name with the copy taking what they read,
    then every file in data order (pipeline/placed_run.py); what the head start placed is not
    placed again, and its copy is done before the files are finished."""
    placed = []
    for i, (part, plan, (sink, _)) in enumerate(zip(model.parts, plans, sinks, strict=True)):
        out_fd = sink.file_descriptor()
        assert out_fd is not None, "copy_shares_reads promised a local, uncompressed output file"
        writer = head.writer(i, plan) if head is not None else \
            PlacedWriter(out_fd, plan.entries, plan.metadata, plan.header_room)
        writer.write_header()
        placed.append(PlacedFile(part, plan, writer))
    placer = Placer(placed, Feed(method, method_plan, settings.device, settings.keep_weight_only, None), state,
                    head.placements if head is not None else None)
    if method_plan.read_weights is not None and view.source is not None:
        view.source.tap = placer
        try:
            method_plan.read_weights()
        finally:
            view.source.tap = None
    for f in placed:
        with progress_bar(_bar_label(f.part.name, len(placed)), f.part.header.data_bytes, "B",
                          settings.progress) as bar:
            placer.feed.bar = bar
            place_file(f, placer)
    if head is not None:
        head.join()
    return [FileRun(f.part.name, f.plan, sink, f.writer, None) for f, (sink, _) in zip(placed, sinks, strict=True)]


def _peak_vram() -> int:
    import torch

    return torch.cuda.max_memory_allocated()


def finish_files(files: list[FileRun], resolved: Mapping[str, Resolved], verify_input: bool) -> list[str]:
    """Each file's tail (tensors known from the header, then its layers' scales), the sink
    completed and the written file checked; returns --verify's summaries."""
    summaries = []
    for f in files:
        for tail in f.plan.tail:
            data = tail.data if tail.scale_of is None else f32_bytes(resolved[tail.scale_of].scale)
            if data:
                f.writer.write(tail.name, data)
        f.writer.finish()
        if f.stream is None:  # written at fixed places: the sink counted none of it
            f.sink.placed(f.writer.bytes_written)
        f.sink.complete()
        if f.sink.readback is not None:
            summary = check_written(f.sink.readback, f.plan, f.stream if verify_input else None)
            if summary:
                summaries.append(summary if len(files) == 1 else f"{f.name}: {summary}")
    return summaries
