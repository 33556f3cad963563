"""The real run over every file of a model: headers out, each file streamed in turn through the
method, then (once the whole model has been seen) each file's tail of scales, its self-check,
and the sink completed. Sinks are owned by the caller (one file, or an io.sharded.ShardedOutput)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Mapping

from fp8stream import verify
from fp8stream.formats.plan_types import LayerPlan, RewritePlan
from fp8stream.io.dtypes import f32_bytes
from fp8stream.io.hashing import HashingStream
from fp8stream.io.reader import TensorStream
from fp8stream.io.sink import OutputSink
from fp8stream.io.writer import StreamingWriter
from fp8stream.methods.interface import CalibrationMethod, MethodPlan, ModelView
from fp8stream.pipeline.check import check_written
from fp8stream.pipeline.inputs import ModelInput
from fp8stream.pipeline.loop import Feed, StreamState, facts_from_state, stream_file
from fp8stream.pipeline.scale_resolution import LayerFacts, Resolved, to_estimate
from fp8stream.progress import bar as progress_bar
from fp8stream.scales.estimate import ScaleEstimate


@dataclass
class FileRun:
    """One output file being written."""

    name: str
    plan: RewritePlan
    sink: OutputSink
    writer: StreamingWriter
    stream: TensorStream | HashingStream


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
                 settings: RunSettings) -> StreamResult:
    """Every file's header and data out, in file order; the method sees the whole model."""
    on_cuda = settings.device == "cuda"  # its peak was reset before method.prepare (rewrite.py)
    state = StreamState()
    files = []
    for part, plan, (sink, out) in zip(model.parts, plans, sinks, strict=True):
        writer = StreamingWriter(out, plan.entries, plan.metadata)
        writer.write_header()
        stream = TensorStream(part.source, part.header)
        if settings.verify:
            stream = HashingStream(stream, keep_raw=verify.needs_raw)
        what = "copying" if len(plans) == 1 else f"copying {part.name}"
        with progress_bar(what, part.header.data_bytes, "B", settings.progress) as bar:
            feed = Feed(method, method_plan, settings.device, settings.keep_weight_only, bar)
            stream_file(stream, plan, feed, writer, state)
        files.append(FileRun(part.name, plan, sink, writer, stream))
    facts = facts_from_state(calibrated, state)
    estimates = method.scales(view, to_estimate(calibrated, facts, settings.overwrite_scales))
    peak = _peak_vram() if on_cuda else None
    return StreamResult(files, facts, state.out_weight_only, estimates, peak)


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
        f.sink.complete()
        if f.sink.readback is not None:
            summary = check_written(f.sink.readback, f.plan, f.stream if verify_input else None)
            if summary:
                summaries.append(summary if len(files) == 1 else f"{f.name}: {summary}")
    return summaries
