"""The stream loop: one input file's tensors in data order, each copied, rewritten or dropped as
the plan says, and shown to the calibration method as its MethodPlan asked.

FP8 weights go to the writer and, a chunk of whole rows at a time, to the method and the
suspicious-weight checks; markers are rewritten at the size the plan fixed; scalars we need are
remembered; everything else is copied. Only one chunk of one tensor is in memory at a time. On the
CPU the rows go as numpy arrays (nothing here needs torch); on a GPU as torch tensors there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fp8stream.errors import InvalidCheckpointError
from fp8stream.formats import comfy_quant
from fp8stream.formats.layers import FP8Layer
from fp8stream.formats.plan import LayerPlan, RewritePlan, Role
from fp8stream.io.dtypes import decode_values
from fp8stream.io.reader import TensorStream
from fp8stream.io.writer import StreamingWriter
from fp8stream.methods.interface import CalibrationMethod, MethodPlan
from fp8stream.pipeline.scale_resolution import LayerFacts
from fp8stream.pipeline.weight_checks import WeightChecks


@dataclass
class StreamState:
    """What the pass learns about each layer while the data goes by (all files of a model)."""

    values: dict[str, list[float]] = field(default_factory=dict)  # small tensors we read
    weight_only: dict[str, bool] = field(default_factory=dict)  # marker flag before rewriting
    checks: WeightChecks = field(default_factory=WeightChecks)  # suspicious weights
    out_weight_only: dict[str, bool] = field(default_factory=dict)  # marker flag written


@dataclass
class Feed:
    """Where the stream's bytes go besides the writer."""

    method: CalibrationMethod
    method_plan: MethodPlan
    device: str  # "cpu": rows go to the method as numpy arrays; else as torch tensors there
    keep_weight_only: bool
    bar: object  # a tqdm bar (update(n))

    def show(self, layer: FP8Layer, rows, row: int, checks: WeightChecks) -> None:
        """Rows [row, row + len(rows)) of an FP8 weight (uint8 [r, in_features]: a numpy array as
        read, or a torch tensor already on the device) to the checks and, where it asked for
        rows, to the method: on the CPU as read; on a GPU both run there, host rows copied there
        once (from pageable memory CUDA has taken the bytes when the copy returns, so the buffer
        may be reused), no pass over the bytes on the host."""
        if self.device != "cpu" and self.method_plan.rows and isinstance(rows, np.ndarray):
            import torch

            rows = torch.from_numpy(rows).to(self.device, non_blocking=True)
        checks.observe(layer, rows)
        if self.method_plan.rows:
            self.method.observe_weight(layer, rows, row)


def _stream_layer_weight(stream: TensorStream, info, layer: FP8Layer, feed: Feed, writer: StreamingWriter,
                         checks: WeightChecks) -> None:
    row = 0
    for chunk in stream.chunks(info):  # chunks are valid until the next one
        rows = np.frombuffer(chunk, dtype=np.uint8).reshape(-1, layer.in_features)
        writer.write(info.name, chunk)
        feed.show(layer, rows, row, checks)
        feed.bar.update(len(chunk))
        row += rows.shape[0]
    if feed.method_plan.rows:
        feed.method.weight_done(layer)


def rewrite_marker(raw: bytes, layer_plan: LayerPlan, size: int, keep_weight_only: bool, state: StreamState) -> bytes:
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
        out_flag = was_weight_only and keep_weight_only
    state.out_weight_only[layer.name] = out_flag
    try:
        return comfy_quant.rewrite_marker(raw, out_flag, size)
    except comfy_quant.MarkerError as e:
        raise InvalidCheckpointError(f"layer {layer.name}: {e}") from None


def decode_scale(raw: bytes, dtype: str) -> list[float]:
    """A scale's values; [] when empty or of a dtype we cannot decode (then it is judged unusable)."""
    try:
        return decode_values(raw, dtype) if raw else []
    except ValueError:
        return []


def stream_file(stream: TensorStream, plan: RewritePlan, feed: Feed, writer: StreamingWriter,
                state: StreamState) -> None:
    """Every tensor of one file through the writer (the tail excepted), then the end-of-input check."""
    watches = feed.method_plan.watches
    for info in plan.header.tensors:
        layer = plan.layer_by_weight.get(info.name)
        if layer is not None:
            _stream_layer_weight(stream, info, layer, feed, writer, state.checks)
            continue
        out_name = plan.out_names.get(info.name)
        if read_whole(plan, info.name):
            data = small_tensor(info, stream.read_all(info), plan, feed, state)
            if data:  # an empty tensor takes no bytes: the writer has moved past it
                writer.write(out_name, data)
            feed.bar.update(info.nbytes)
            continue
        # Non-FP8 tensors a method models (biases, norms, BF16 producers) are shown to it as they pass.
        for chunk in stream.chunks(info):
            writer.write(out_name, chunk)
            if info.name in watches:
                feed.method.observe_tensor(info, chunk)
            feed.bar.update(len(chunk))
    stream.finish()


def read_whole(plan: RewritePlan, name: str) -> bool:
    """Whether a tensor (not a calibrated FP8 weight) is read whole and handed to `small_tensor`:
    markers, scales and the scalars the calibration reads; the rest passes through."""
    return plan.roles[name] is not Role.PASS or name in plan.scalar_keys


def small_tensor(info, raw: bytearray, plan: RewritePlan, feed: Feed, state: StreamState) -> bytes | bytearray | None:
    """A tensor `read_whole` selects, as read: its values noted, a marker rewritten at the size the
    plan fixed; the bytes to write under its output name (None: not written)."""
    role = plan.roles[info.name]
    if role is Role.MARKER:
        return rewrite_marker(raw, plan.plan_by_marker[info.name], plan.out_sizes[info.name],
                              feed.keep_weight_only, state)
    if role is Role.LEGACY_MARKER:
        size = plan.out_sizes[info.name]  # its values mean nothing: 2 zeros where it grows to weight-only
        return bytes(raw[:size]).ljust(size, b"\0")
    if role is Role.DROP:
        return None
    state.values[info.name] = decode_scale(raw, info.dtype)
    if info.name in feed.method_plan.watches:
        feed.method.observe_tensor(info, raw)
    return None if role is Role.MOVED_SCALE else raw


def facts_from_state(plans: list[LayerPlan], state: StreamState, weights_seen: bool = True) -> dict[str, LayerFacts]:
    """Each layer's facts; `weights_seen` False (a dry run): no weight-byte checks to report."""
    out = {}
    for p in plans:
        layer = p.layer
        weight_scale = state.values[layer.weight_scale][0] if layer.weight_scale else 1.0
        existing = state.values.get(layer.existing_input_scale) if layer.existing_input_scale else None
        warnings = tuple(state.checks.warnings(layer, weight_scale, existing)) if weights_seen else ()
        out[layer.name] = LayerFacts(weight_scale, existing, state.weight_only.get(layer.name, bool(layer.weight_only)),
                                     state.out_weight_only.get(layer.name), warnings)
    return out
