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
from fp8stream.calibration.suspicious import WeightChecks
from fp8stream.errors import FP8StreamError, InvalidCheckpointError, NothingToCalibrateError, OutputError
from fp8stream.formats import comfy_quant
from fp8stream.formats.existing_scales import judge_existing_scale
from fp8stream.formats.layers import FP8Layer
from fp8stream.formats.plan import RewritePlan, Role, build_plan
from fp8stream.io.atomic import AtomicOutput, check_free_space, check_output_path
from fp8stream.io.dtypes import decode_values
from fp8stream.io.hashing import HashingStream
from fp8stream.io.header import read_header
from fp8stream.io.reader import CHUNK_BYTES, TensorStream, open_input, read_input_header
from fp8stream.io.writer import StreamingWriter
from fp8stream.report import FileReport, LayerReport, SkippedReport
from fp8stream import verify


@dataclass
class RewriteOptions:
    input: str
    output: str | None  # None with dry_run
    settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    overwrite_scales: bool = False
    keep_weight_only: bool = False
    force: bool = False
    dry_run: bool = False
    progress: bool = False
    verify: bool = False  # hash the input while reading, re-read the output and compare


@dataclass
class _StreamState:
    """What the pass learns about each layer while the data goes by."""

    values: dict[str, list[float]] = field(default_factory=dict)  # small tensors we read
    weight_only: dict[str, bool] = field(default_factory=dict)  # marker flag before rewriting
    checks: WeightChecks = field(default_factory=WeightChecks)  # suspicious weights


def _progress(total: int, enabled: bool, label: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(label), file=sys.stderr,
                disable=not enabled, leave=False)


def _stream_layer_weight(stream, info, layer: FP8Layer, method, writer, device: torch.device, bar,
                         checks: WeightChecks) -> None:
    rows_per_chunk = max(1, CHUNK_BYTES // max(1, layer.in_features))
    row = 0
    for chunk in stream.chunks(info, rows_per_chunk * layer.in_features):
        writer.write(info.name, chunk)
        rows = torch.frombuffer(chunk, dtype=torch.uint8).view(-1, layer.in_features)
        checks.observe(layer, rows)
        method.observe_weight(layer, rows.to(device, non_blocking=True), row)
        row += rows.shape[0]
        bar.update(len(chunk))
    method.weight_done(layer)


def _rewrite_marker(raw: bytes, layer: FP8Layer, options: RewriteOptions, state: _StreamState) -> bytes:
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
    was_weight_only = comfy_quant.is_weight_only(doc)
    state.weight_only[layer.name] = was_weight_only
    keep_flag = was_weight_only and options.keep_weight_only
    if keep_flag == was_weight_only:
        return raw  # nothing to change: the bytes pass through as they are
    try:
        return comfy_quant.encode_marker(comfy_quant.with_weight_only(doc, keep_flag), len(raw))
    except comfy_quant.MarkerError as e:
        raise InvalidCheckpointError(f"layer {layer.name}: {e}") from None


def _decode_scale(raw: bytes, dtype: str) -> list[float]:
    """A scale's values; [] when empty or of a dtype we cannot decode (then it is judged unusable)."""
    try:
        return decode_values(raw, dtype) if raw else []
    except ValueError:
        return []


def _stream_data(stream: TensorStream, plan: RewritePlan, options: RewriteOptions, method, writer, bar) -> _StreamState:
    state = _StreamState()
    device = torch.device(options.settings.device)
    for info in plan.header.tensors:
        role = plan.roles[info.name]
        layer = plan.layer_by_weight.get(info.name)
        if layer is not None:
            _stream_layer_weight(stream, info, layer, method, writer, device, bar, state.checks)
            continue
        if role is Role.MARKER:
            writer.write(info.name, _rewrite_marker(stream.read_all(info), plan.layer_by_marker[info.name], options, state))
        elif role is Role.MOVED_SCALE or info.name in plan.scalar_keys:
            raw = stream.read_all(info)
            state.values[info.name] = _decode_scale(raw, info.dtype)
            if role is not Role.MOVED_SCALE:
                writer.write(info.name, raw)
        else:
            for chunk in stream.chunks(info):
                writer.write(info.name, chunk)
                bar.update(len(chunk))
            continue
        bar.update(info.nbytes)
    stream.finish()
    return state


def _layer_reports(plan: RewritePlan, options: RewriteOptions, method, state: _StreamState | None) -> list[LayerReport]:
    """Each layer's final scale; with state None (dry run) only what the header tells."""
    reports = []
    for layer in plan.layers:
        shape = list(layer.weight.shape)
        if state is None:
            reports.append(LayerReport(layer.name, shape, float("nan"), "new", "dry run: not computed",
                                       options.settings.method, "", not options.keep_weight_only))
            continue
        weight_scale = state.values[layer.weight_scale][0] if layer.weight_scale else 1.0
        weight_only = state.weight_only.get(layer.name, False)
        existing = state.values.get(layer.existing_input_scale) if layer.existing_input_scale else None
        keep, why = judge_existing_scale(existing, weight_scale, weight_only, options.overwrite_scales)
        fp8_activations = not (weight_only and options.keep_weight_only)
        warnings = state.checks.warnings(layer, weight_scale, existing)
        if keep:
            reports.append(LayerReport(layer.name, shape, as_f32(existing[0]), "kept", why, "existing",
                                       "scale from the file", fp8_activations, warnings))
            continue
        estimate = method.estimate(layer, weight_scale)
        scale = as_f32(estimate.scale)
        if not (scale > 0.0 and scale < float("inf")):
            raise FP8StreamError(f"layer {layer.name}: computed scale {scale} is not positive and finite")
        source = "new" if existing is None else "replaced"
        reports.append(LayerReport(layer.name, shape, scale, source, why, options.settings.method,
                                   estimate.assumption, fp8_activations, warnings + estimate.warnings))
    return reports


def _check_written(path: str, plan: RewritePlan) -> None:
    """Parse the written header back with the input validator and read every scale back:
    trust nothing we wrote."""
    with open(path, "rb") as f:
        header = read_header(f, os.fstat(f.fileno()).st_size)
    if [t.name for t in header.tensors] != [e.name for e in plan.entries]:
        raise RuntimeError("written header does not match the plan")
    bad = verify.unusable_scales(path, [layer.input_scale for layer in plan.layers])
    if bad:
        raise OutputError(f"written output failed its check: {bad[0]} is not a finite, positive F32 scalar")


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
    plan = build_plan(header, options.settings.describe())
    report = FileReport(options.input, options.output, bytes_in=header.file_bytes)
    report.skipped = [SkippedReport(s.name, s.reason) for s in plan.skipped]
    if not plan.layers:
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
    if options.verify:
        stream = HashingStream(stream, keep_raw=verify.needs_raw)
    atomic = AtomicOutput(options.output)
    with atomic as sink, _progress(header.data_bytes, options.progress, source.label) as bar:
        writer = StreamingWriter(sink, plan.entries, plan.metadata)
        writer.write_header()
        state = _stream_data(stream, plan, options, method, writer, bar)
        report.layers = _layer_reports(plan, options, method, state)
        for layer_report, layer in zip(report.layers, plan.layers):
            writer.write(layer.input_scale, f32_bytes(layer_report.scale))
        writer.finish()
        sink.flush()
        _check_written(atomic.temp, plan)
        if options.verify:
            report.verify = _verify_written(stream, atomic.temp)
    return report


def _verify_written(stream: HashingStream, path: str) -> str:
    """Re-read the written file and compare it with the input's digests; its summary and cost."""
    started = time.monotonic()
    comparison = verify.compare_with_stream(stream, path)
    if not comparison.ok:
        first = comparison.unexpected[0]
        raise OutputError(f"--verify: output differs from the input where it must not: {first.name}: {first.detail}"
                          f" ({len(comparison.unexpected)} unexpected differences)")
    seconds = stream.seconds + time.monotonic() - started
    return f"{comparison.summary()}; verify took {seconds:.2f} s (hashing while reading + re-reading the output)"
