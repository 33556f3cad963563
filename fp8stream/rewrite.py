"""The one streaming pass: plan from the header, copy and calibrate tensor by tensor, scales last.

Data flow: input stream -> header -> plan (output layout) -> writer header; then for each input
tensor in data order: FP8 weights go to the writer and, row chunk by row chunk, to the
calibration method; markers are rewritten at their own size; scalars we need are remembered;
everything else is copied. Finally the tail of activation scales. Only one chunk of one tensor
is in memory at a time.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO

import torch

from fp8stream.calibration.fp8 import as_f32, f32_bytes
from fp8stream.calibration.methods import CalibrationSettings, make_method
from fp8stream.errors import FP8StreamError, InvalidCheckpointError, NothingToCalibrateError
from fp8stream.formats import comfy_quant, legacy
from fp8stream.formats.existing_scales import judge_existing_scale
from fp8stream.formats.groups import share_scales
from fp8stream.formats.layers import LEGACY, FP8Layer
from fp8stream.formats.plan import FormatOptions, LayerPlan, RewritePlan, Role, build_plan
from fp8stream.formats.selection import Selection
from fp8stream.formats.text_encoders import TEXT_ENCODER_NOTE
from fp8stream.io.atomic import AtomicOutput, check_free_space, check_output_path
from fp8stream.io.dtypes import decode_values
from fp8stream.io.header import read_header
from fp8stream.io.reader import CHUNK_BYTES, TensorStream, open_input, read_input_header
from fp8stream.io.writer import StreamingWriter
from fp8stream.report import ExcludedReport, FileReport, LayerReport, SkippedReport


@dataclass
class RewriteOptions:
    input: str
    output: str | None  # None with dry_run
    settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    overwrite_scales: bool = False
    keep_weight_only: bool = False
    target: str = "auto"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    preset: str | None = None
    exclude_untouched: bool = False
    force: bool = False
    dry_run: bool = False
    progress: bool = False


    def format_options(self) -> FormatOptions:
        return FormatOptions(keep_weight_only=self.keep_weight_only, target=self.target,
                             selection=Selection(tuple(self.include), tuple(self.exclude), self.preset),
                             exclude_untouched=self.exclude_untouched)


@dataclass
class _StreamState:
    """What the pass learns about each layer while the data goes by."""

    values: dict[str, list[float]] = field(default_factory=dict)  # small tensors we read
    weight_only: dict[str, bool] = field(default_factory=dict)  # marker flag before rewriting
    out_weight_only: dict[str, bool] = field(default_factory=dict)  # marker flag written


def _progress(total: int, enabled: bool, label: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(label), file=sys.stderr,
                disable=not enabled, leave=False)


def _stream_layer_weight(stream, info, layer: FP8Layer, method, writer, device: torch.device, bar) -> None:
    rows_per_chunk = max(1, CHUNK_BYTES // max(1, layer.in_features))
    row = 0
    for chunk in stream.chunks(info, rows_per_chunk * layer.in_features):
        writer.write(info.name, chunk)
        rows = torch.frombuffer(chunk, dtype=torch.uint8).view(-1, layer.in_features)
        method.observe_weight(layer, rows.to(device, non_blocking=True), row)
        row += rows.shape[0]
        bar.update(len(chunk))
    method.weight_done(layer)


def _rewrite_marker(raw: bytes, layer_plan: LayerPlan, size: int, options: RewriteOptions,
                    state: _StreamState) -> bytes:
    layer = layer_plan.layer
    try:
        doc = comfy_quant.parse_marker(bytes(raw))
    except comfy_quant.MarkerError as e:
        raise InvalidCheckpointError(f"layer {layer.name}: {e}") from None
    fmt = doc.get("format")
    if fmt != comfy_quant.TENSORWISE_FP8:
        # The plan was made from the header, which looked tensor-wise; the values disagree.
        raise InvalidCheckpointError(
            f"layer {layer.name}: comfy_quant says format {fmt!r}, but its tensors look like "
            f"{comfy_quant.TENSORWISE_FP8!r}; refusing to guess"
        )
    # With _quantization_metadata ComfyUI reads the flag from the header (the plan knows it).
    was_weight_only = layer.weight_only if layer.weight_only is not None else comfy_quant.is_weight_only(doc)
    state.weight_only[layer.name] = was_weight_only
    out_flag = layer_plan.out_weight_only
    if out_flag is None:
        out_flag = was_weight_only and options.keep_weight_only
    state.out_weight_only[layer.name] = out_flag
    try:
        return comfy_quant.rewrite_marker(raw, out_flag, size)
    except comfy_quant.MarkerError as e:
        raise InvalidCheckpointError(f"layer {layer.name}: {e}") from None


def _stream_data(stream: TensorStream, plan: RewritePlan, options: RewriteOptions, method, writer, bar) -> _StreamState:
    state = _StreamState()
    device = torch.device(options.settings.device)
    for info in plan.header.tensors:
        role = plan.roles[info.name]
        layer = plan.layer_by_weight.get(info.name)
        if layer is not None:
            _stream_layer_weight(stream, info, layer, method, writer, device, bar)
            continue
        out_name = plan.out_names[info.name]
        if role is Role.MARKER:
            raw = _rewrite_marker(stream.read_all(info), plan.plan_by_marker[info.name], plan.out_sizes[info.name],
                                  options, state)
            writer.write(out_name, raw)
        elif role is Role.LEGACY_MARKER:
            kept = stream.read_all(info)[: plan.out_sizes[info.name]]
            if kept:  # an empty tensor takes no bytes: the writer has moved past it
                writer.write(out_name, kept)
        elif role is Role.DROP:
            stream.read_all(info)
        elif role is Role.MOVED_SCALE or info.name in plan.scalar_keys:
            raw = stream.read_all(info)
            state.values[info.name] = decode_values(raw, info.dtype) if raw else []
            if role is not Role.MOVED_SCALE:
                writer.write(out_name, raw)
        else:
            for chunk in stream.chunks(info):
                writer.write(out_name, chunk)
                bar.update(len(chunk))
            continue
        bar.update(info.nbytes)
    stream.finish()
    return state


def _runs_fp8(layer_plan: LayerPlan, out_weight_only: bool | None) -> bool:
    """Whether ComfyUI quantizes this layer's input with our scale after the run."""
    return not layer_plan.layer.text_encoder and out_weight_only is False


def _layer_reports(plan: RewritePlan, options: RewriteOptions, method, state: _StreamState | None) -> list[LayerReport]:
    """Each calibrated layer's final scale; with state None (dry run) only what the header tells.

    Scales are estimated per layer, then layers fed by the same tensor get their group's max,
    then legacy scales are kept off exactly 1.0 (the legacy loader drops that value)."""
    reports: dict[str, LayerReport] = {}
    calibrated = [p for p in plan.layer_plans if p.calibrated]
    for p in calibrated:
        layer = p.layer
        shape = list(layer.weight.shape)
        notes = [TEXT_ENCODER_NOTE] if layer.text_encoder else []
        if state is None:
            out_flag = p.out_weight_only
            reports[layer.name] = LayerReport(layer.name, shape, float("nan"), "new", "dry run: not computed",
                                              options.settings.method, "", _runs_fp8(p, out_flag), [],
                                              p.out_flavour, notes)
            continue
        weight_scale = state.values[layer.weight_scale][0] if layer.weight_scale else 1.0
        weight_only = state.weight_only.get(layer.name, bool(layer.weight_only))
        out_flag = state.out_weight_only.get(layer.name, p.out_weight_only)
        existing = state.values.get(layer.existing_input_scale) if layer.existing_input_scale else None
        keep, why = judge_existing_scale(existing, weight_scale, weight_only, options.overwrite_scales)
        if keep:
            reports[layer.name] = LayerReport(layer.name, shape, as_f32(existing[0]), "kept", why, "existing",
                                              "scale from the file", _runs_fp8(p, out_flag), [], p.out_flavour, notes)
            continue
        estimate = method.estimate(layer, weight_scale)
        scale = as_f32(estimate.scale)
        if not (scale > 0.0 and scale < float("inf")):
            raise FP8StreamError(f"layer {layer.name}: computed scale {scale} is not positive and finite")
        source = "new" if existing is None else "replaced"
        reports[layer.name] = LayerReport(layer.name, shape, scale, source, why, options.settings.method,
                                          estimate.assumption, _runs_fp8(p, out_flag), estimate.warnings,
                                          p.out_flavour, notes)
    if state is not None:
        scales = {name: r.scale for name, r in reports.items()}
        for name, members in share_scales(scales, plan.groups).items():
            report = reports[name]
            if scales[name] != report.scale and report.source == "kept":
                report.source, report.why = "replaced", "raised to its group's max"
            report.scale = scales[name]
            others = ", ".join(m for m in members if m != name)
            report.notes.append(f"shares its input with {others}: max of the group")
        for p in calibrated:
            if p.out_flavour == LEGACY:
                reports[p.layer.name].scale = legacy.never_one(reports[p.layer.name].scale)
    return [reports[p.layer.name] for p in calibrated]


def _excluded_reports(plan: RewritePlan, state: _StreamState | None) -> list[ExcludedReport]:
    out = []
    for p in plan.excluded:
        flag = state.out_weight_only.get(p.layer.name, p.out_weight_only) if state else p.out_weight_only
        fp8 = None if flag is None else (not flag and not p.layer.text_encoder)
        if p.layer.flavour == "plain" and p.untouched:
            fp8 = False  # no marker: ComfyUI's mixed-precision loader upcasts it
        out.append(ExcludedReport(p.layer.name, p.excluded + (" (untouched)" if p.untouched else ""), fp8))
    return out


def _check_written(path: str, plan: RewritePlan) -> None:
    """Parse the written header back with the input validator: trust nothing we wrote."""
    with open(path, "rb") as f:
        header = read_header(f, os.fstat(f.fileno()).st_size)
    if [t.name for t in header.tensors] != [e.name for e in plan.entries]:
        raise RuntimeError("written header does not match the plan")


def calibrate_file(options: RewriteOptions) -> FileReport:
    """Calibrate one checkpoint; raises FP8StreamError for anything a user can cause."""
    started = time.monotonic()
    source = open_input(options.input)
    try:
        report = _calibrate(source, options)
    finally:
        source.close()
    report.seconds = time.monotonic() - started
    return report


def _calibrate(source, options: RewriteOptions) -> FileReport:
    header = read_input_header(source)
    plan = build_plan(header, options.settings.describe(), options.format_options())
    report = FileReport(options.input, options.output, bytes_in=header.file_bytes)
    report.skipped = [SkippedReport(s.name, s.reason) for s in plan.skipped]
    report.excluded = _excluded_reports(plan, None)
    if not plan.layer_plans:
        raise NothingToCalibrateError(f"{source.label}: no FP8 linear layer to calibrate")
    report.bytes_out = plan.output_bytes
    if options.dry_run:
        report.status = "dry-run"
        report.layers = _layer_reports(plan, options, None, None)
        return report
    assert options.output is not None
    check_output_path(options.output, source.path, options.force)
    check_free_space(options.output, report.bytes_out)
    method = make_method(options.settings)
    stream = TensorStream(source, header)
    atomic = AtomicOutput(options.output)
    with atomic as sink, _progress(header.data_bytes, options.progress, source.label) as bar:
        writer = StreamingWriter(sink, plan.entries, plan.metadata)
        writer.write_header()
        state = _stream_data(stream, plan, options, method, writer, bar)
        report.layers = _layer_reports(plan, options, method, state)
        report.excluded = _excluded_reports(plan, state)
        scale_of = {r.name: r.scale for r in report.layers}
        for tail in plan.tail:
            data = tail.data if tail.scale_of is None else f32_bytes(scale_of[tail.scale_of])
            if data:
                writer.write(tail.name, data)
        writer.finish()
        sink.flush()
        _check_written(atomic.temp, plan)
    return report
