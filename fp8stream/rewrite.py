"""The one streaming pass: plan from the header, copy and calibrate tensor by tensor, scales last.

Data flow: input stream -> header -> plan (output layout) -> writer header; then for each input
tensor in data order: FP8 weights go to the writer and, row chunk by row chunk, to the
calibration method; markers are rewritten at their own size; scalars we need are remembered;
everything else is copied. Finally the tail of activation scales. Only one chunk of one tensor
is in memory at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from typing import BinaryIO

import torch

from fp8stream.calibration.fp8 import as_f32, f32_bytes
from fp8stream.calibration.methods import CalibrationSettings, make_method
from fp8stream.calibration.suspicious import WeightChecks
from fp8stream.errors import FP8StreamError, InvalidCheckpointError, NothingToCalibrateError, OutputError, UsageError
from fp8stream.formats import comfy_quant, legacy
from fp8stream.formats.existing_scales import judge_existing_scale
from fp8stream.formats.groups import share_scales
from fp8stream.formats.layers import LEGACY, FP8Layer, take_inventory
from fp8stream.formats.shards import check_shard, find_index, merged_header, output_index, read_index
from fp8stream.formats.plan import FormatOptions, LayerPlan, RewritePlan, Role, build_plan
from fp8stream.formats.selection import Selection
from fp8stream.formats.text_encoders import TEXT_ENCODER_NOTE
from fp8stream.io.atomic import AtomicFolder, AtomicOutput, check_free_space, check_output_path, same_file
from fp8stream.io.compression import ZstdSettings
from fp8stream.io.dtypes import decode_values
from fp8stream.io.hashing import HashingStream
from fp8stream.io.reader import LazyFile, TensorStream, chunk_bytes_for, open_input, read_input_header
from fp8stream.io.sink import OutputSink
from fp8stream.io.writer import StreamingWriter
from fp8stream.report import ExcludedReport, FileReport, LayerReport, SkippedReport
from fp8stream import verify


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
    verify: bool = False  # hash the input while reading, re-read the output and compare
    zstd: ZstdSettings | None = None  # compress the output


    def format_options(self) -> FormatOptions:
        return FormatOptions(keep_weight_only=self.keep_weight_only, target=self.target,
                             selection=Selection(tuple(self.include), tuple(self.exclude), self.preset),
                             exclude_untouched=self.exclude_untouched)


@dataclass
class _StreamState:
    """What the pass learns about each layer while the data goes by."""

    values: dict[str, list[float]] = field(default_factory=dict)  # small tensors we read
    weight_only: dict[str, bool] = field(default_factory=dict)  # marker flag before rewriting
    checks: WeightChecks = field(default_factory=WeightChecks)  # suspicious weights
    out_weight_only: dict[str, bool] = field(default_factory=dict)  # marker flag written


def _progress(total: int, enabled: bool, label: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(label), file=sys.stderr,
                disable=not enabled, leave=False)


def _feed_weight(layer: FP8Layer, chunks, method, device: torch.device, on_chunk=None) -> None:
    """Every chunk (whole rows) of a layer's FP8 weight to the method; `on_chunk(chunk, rows)`
    sees each first. Used by the streaming pass and by reads of another shard alike."""
    row = 0
    for chunk in chunks:
        if isinstance(chunk, bytes):  # positioned reads give read-only bytes; torch wants a writable buffer
            chunk = bytearray(chunk)
        rows = torch.frombuffer(chunk, dtype=torch.uint8).view(-1, layer.in_features)
        if on_chunk is not None:
            on_chunk(chunk, rows)
        method.observe_weight(layer, rows.to(device, non_blocking=True), row)
        row += rows.shape[0]
    method.weight_done(layer)


def _stream_layer_weight(stream, info, layer: FP8Layer, method, writer, device: torch.device, bar,
                         checks: WeightChecks) -> None:
    def write_and_check(chunk, rows) -> None:
        writer.write(info.name, chunk)
        checks.observe(layer, rows)
        bar.update(len(chunk))

    _feed_weight(layer, stream.chunks(info), method, device, write_and_check)  # chunks valid until the next


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


def _decode_scale(raw: bytes, dtype: str) -> list[float]:
    """A scale's values; [] when empty or of a dtype we cannot decode (then it is judged unusable)."""
    try:
        return decode_values(raw, dtype) if raw else []
    except ValueError:
        return []


def _stream_data(stream: TensorStream, plan: RewritePlan, options: RewriteOptions, method, writer, bar) -> _StreamState:
    state = _StreamState()
    device = torch.device(options.settings.device)
    wants = getattr(method, "wants", lambda info: False)
    for info in plan.header.tensors:
        role = plan.roles[info.name]
        layer = plan.layer_by_weight.get(info.name)
        if layer is not None:
            _stream_layer_weight(stream, info, layer, method, writer, device, bar, state.checks)
            continue
        # Non-FP8 tensors a method models (biases, norms, BF16 producers) are shown to it as they pass.
        watch = wants(info)
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
            state.values[info.name] = _decode_scale(raw, info.dtype)
            if watch:
                method.observe_tensor(info, raw)
            if role is not Role.MOVED_SCALE:
                writer.write(out_name, raw)
        else:
            for chunk in stream.chunks(info):
                writer.write(out_name, chunk)
                if watch:
                    method.observe_tensor(info, chunk)
                bar.update(len(chunk))
            continue
        bar.update(info.nbytes)
    stream.finish()
    return state


def _runs_fp8(layer_plan: LayerPlan, out_weight_only: bool | None) -> bool:
    """Whether ComfyUI quantizes this layer's input with our scale after the run."""
    return not layer_plan.layer.text_encoder and out_weight_only is False


def _own_scale(layer: FP8Layer, values: dict[str, list[float]], weight_only: bool, method,
               options: RewriteOptions) -> LayerReport:
    """A layer's own scale (before groups): a real existing one kept, else the method's estimate."""
    shape = list(layer.weight.shape)
    weight_scale = values[layer.weight_scale][0] if layer.weight_scale else 1.0
    existing = values.get(layer.existing_input_scale) if layer.existing_input_scale else None
    keep, why = judge_existing_scale(existing, weight_scale, weight_only, options.overwrite_scales)
    if keep:
        return LayerReport(layer.name, shape, as_f32(existing[0]), "kept", why, "existing", "scale from the file", True)
    estimate = method.estimate(layer, weight_scale)
    scale = as_f32(estimate.scale)
    if not (scale > 0.0 and scale < float("inf")):
        raise FP8StreamError(f"layer {layer.name}: computed scale {scale} is not positive and finite")
    source = "new" if existing is None else "replaced"
    return LayerReport(layer.name, shape, scale, source, why, options.settings.method, estimate.assumption, True,
                       estimate.warnings)


def _read_ahead_scale(path: str, layer: FP8Layer, options: RewriteOptions) -> float:
    """The own scale of a group member that lives in another shard, read with positioned reads
    one chunk at a time (same chunks and seed as the streaming pass, so the same value)."""
    method = make_method(options.settings)
    device = torch.device(options.settings.device)
    with LazyFile(path) as f:
        if hasattr(method, "begin"):
            method.begin([layer], f.header)  # a single-layer view (its own shard's tensors)
        values = {}
        for key in (layer.weight_scale, layer.existing_input_scale):
            if key:
                values[key] = decode_values(f.read(f.header.get(key)), f.header.get(key).dtype)
        weight_only = bool(layer.weight_only)
        if layer.weight_only is None and layer.marker:
            weight_only = comfy_quant.is_weight_only(comfy_quant.parse_marker(f.read(f.header.get(layer.marker))))
        weight = f.header.get(layer.weight.name)
        _feed_weight(layer, f.read_chunks(weight, chunk_bytes_for(weight)), method, device)
    return _own_scale(layer, values, weight_only, method, options).scale


def _layer_reports(plan: RewritePlan, options: RewriteOptions, method, state: _StreamState | None,
                   external: dict[str, float] | None = None) -> list[LayerReport]:
    """Each calibrated layer's final scale; with state None (dry run) only what the header tells.
    `external`: own scales of group members in other shards.

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
        out_flag = state.out_weight_only.get(layer.name, p.out_weight_only)
        report = _own_scale(layer, state.values, state.weight_only.get(layer.name, bool(layer.weight_only)),
                            method, options)
        weight_scale = state.values[layer.weight_scale][0] if layer.weight_scale else 1.0
        existing = state.values.get(layer.existing_input_scale) if layer.existing_input_scale else None
        report.warnings = state.checks.warnings(layer, weight_scale, existing) + report.warnings
        report.fp8_activations, report.flavour, report.notes = _runs_fp8(p, out_flag), p.out_flavour, notes
        reports[layer.name] = report
    if state is not None:
        scales = {name: r.scale for name, r in reports.items()}
        scales.update({name: v for name, v in (external or {}).items() if name not in scales})
        for name, members in share_scales(scales, plan.groups).items():
            report = reports.get(name)
            if report is None:
                continue  # a member in another shard: its own shard writes it
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


def _check_written(path: str, plan: RewritePlan, stream: HashingStream | None) -> str | None:
    """Parse the written header back with the input validator and read every scale back:
    trust nothing we wrote. With --verify (`stream`: the input's HashingStream), the output is
    re-read whole and compared with the input; returns that comparison's summary."""
    source = open_input(path)
    try:
        header = read_input_header(source)
        compressed = source.compressed
    finally:
        source.close()
    if [t.name for t in header.tensors] != [e.name for e in plan.entries]:
        raise RuntimeError("written header does not match the plan")
    started = time.monotonic()
    written = verify.read_back(path) if stream is not None or compressed else None
    scales = [t.name for t in plan.tail if t.scale_of is not None]
    bad = verify.unusable_scales(path, scales, written)
    if bad:
        raise OutputError(f"written output failed its check: {bad[0]} is not a finite, positive F32 scalar")
    if stream is None:
        return None
    comparison = verify.compare(verify.StreamSide(stream), written)
    if not comparison.ok:
        first = comparison.unexpected[0]
        raise OutputError(f"--verify: output differs from the input where it must not: {first.name}: {first.detail}"
                          f" ({len(comparison.unexpected)} unexpected differences)")
    seconds = stream.seconds + time.monotonic() - started
    return f"{comparison.summary()}; verify took {seconds:.2f} s (hashing while reading + re-reading the output)"


def calibrate_file(options: RewriteOptions) -> FileReport:
    """Calibrate one checkpoint; raises FP8StreamError for anything a user can cause."""
    started = time.monotonic()
    index_path = find_index(options.input) if options.input != "-" else None
    if index_path is not None:
        report = _calibrate_sharded(index_path, options)
    else:
        source = open_input(options.input)
        try:
            report = _calibrate(source, options)[0]
        finally:
            source.close()
    report.seconds = time.monotonic() - started
    return report


def _calibrate_sharded(index_path: str, options: RewriteOptions) -> FileReport:
    """Each shard streamed in turn into a temp folder that becomes OUT when all are written."""
    index = read_index(index_path)
    headers = []
    for shard in index.shards:
        source = open_input(os.path.join(index.folder, shard))
        try:
            headers.append(read_input_header(source))
        finally:
            source.close()
        check_shard(index, shard, headers[-1])
    whole = merged_header(headers)
    report = FileReport(options.input, options.output, bytes_in=sum(h.file_bytes for h in headers))
    if options.output is not None and not options.dry_run:
        out = os.path.abspath(options.output)
        if out == index.folder or (os.path.exists(out) and same_file(out, index.folder)):
            raise UsageError(f"{options.output}: output is the input folder; choose another folder")
        if os.path.lexists(out) and not options.force:
            raise UsageError(f"{options.output}: exists (use --force to replace it)")
        if not os.path.isdir(os.path.dirname(out)):
            raise OutputError(f"{options.output}: folder {os.path.dirname(out)} does not exist")
    shard_of = {layer.name: os.path.join(index.folder, index.weight_map[layer.weight.name])
                for layer in take_inventory(whole).layers}
    entries: dict[str, list[str]] = {}
    with contextlib.ExitStack() as stack:
        folder = None if options.dry_run else stack.enter_context(AtomicFolder(options.output, replace=options.force))
        for shard in index.shards:
            sub = dataclasses.replace(options, input=os.path.join(index.folder, shard),
                                      output=None if folder is None else os.path.join(folder, shard))
            source = open_input(sub.input)
            try:
                part, plan = _calibrate(source, sub, whole=whole, shard_of=shard_of, allow_empty=True,
                                        tensor_path={t: os.path.join(index.folder, s) for t, s in index.weight_map.items()})
            finally:
                source.close()
            entries[shard] = [e.name for e in plan.entries]
            report.layers += part.layers
            report.skipped += part.skipped
            report.excluded += part.excluded
            report.bytes_out += part.bytes_out
            if part.verify:
                report.verify = "; ".join(filter(None, [report.verify, f"{shard}: {part.verify}"]))
            report.status = part.status
        if not report.layers and not report.excluded:
            raise NothingToCalibrateError(f"{index_path}: no FP8 linear layer to calibrate")
        blob = output_index(index, entries, report.bytes_out)
        if folder is not None:
            with AtomicOutput(os.path.join(folder, index.name)) as sink:
                sink.write(blob)
    return report


def _calibrate(source, options: RewriteOptions, whole=None, shard_of: dict[str, str] | None = None,
               allow_empty: bool = False, tensor_path: dict[str, str] | None = None) -> tuple[FileReport, RewritePlan]:
    """One file, or one shard given the merged header `whole` and each layer's shard path."""
    shard_of = shard_of or {}
    header = read_input_header(source)
    plan = build_plan(header, options.settings.describe(), options.format_options(), whole)
    report = FileReport(options.input, options.output, bytes_in=header.file_bytes)
    report.skipped = [SkippedReport(s.name, s.reason) for s in plan.skipped]
    report.excluded = _excluded_reports(plan, None)
    if not plan.layer_plans and not allow_empty:
        raise NothingToCalibrateError(f"{source.label}: no FP8 linear layer to calibrate")
    report.bytes_out = plan.output_bytes
    if options.dry_run:
        report.status = "dry-run"
        report.layers = _layer_reports(plan, options, None, None)
        return report, plan
    assert options.output is not None
    if options.output != "-":
        check_output_path(options.output, source.path, options.force)
        if options.zstd is None:  # a compressed size is not known before the end
            check_free_space(options.output, report.bytes_out)
    method = make_method(options.settings)
    if hasattr(method, "begin"):
        # The method's model of the network, from names and shapes (of the whole model when sharded:
        # tensors it needs from other shards it reads with positioned reads, `tensor_path`).
        # A plain file names itself for every tensor: methods that read ahead (forward) need it.
        if tensor_path is None and source.path is not None and source.size is not None and not source.compressed:
            tensor_path = {t.name: source.path for t in header.tensors}
        method.begin(plan.layers, header, whole=whole, tensor_path=tensor_path)
    report.notes = list(getattr(method, "notes", []))
    on_cuda = options.settings.device == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    stream = TensorStream(source, header)
    if options.verify:
        stream = HashingStream(stream, keep_raw=verify.needs_raw)
    output = OutputSink(options.output, options.zstd)
    with output as sink, _progress(header.data_bytes, options.progress, source.label) as bar:
        writer = StreamingWriter(sink, plan.entries, plan.metadata)
        writer.write_header()
        state = _stream_data(stream, plan, options, method, writer, bar)
        own = {layer.name for layer in plan.layers}
        external = {name: _read_ahead_scale(shard_of[name], plan.inventory_layer(name), options)
                    for group in plan.groups for name in group if name not in own}
        report.layers = _layer_reports(plan, options, method, state, external)
        report.excluded = _excluded_reports(plan, state)
        scale_of = {r.name: r.scale for r in report.layers}
        for tail in plan.tail:
            data = tail.data if tail.scale_of is None else f32_bytes(scale_of[tail.scale_of])
            if data:
                writer.write(tail.name, data)
        writer.finish()
        output.complete()
        if output.readback is not None:
            report.verify = _check_written(output.readback, plan, stream if options.verify else None)
    report.bytes_written = output.bytes_written
    if on_cuda:
        report.peak_vram_bytes = torch.cuda.max_memory_allocated()
    return report, plan

