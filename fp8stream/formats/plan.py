"""The output layout, computed from the input header and the options alone.

Fixed rules (pipes and byte-for-byte comparisons depend on them): input tensors keep their
data order and bytes; a `comfy_quant` marker is rewritten in place at its own size; every
activation scale of a calibrated layer, new or already present, moves to a tail section after
the data, in layer order, because its value depends on a weight that may come later.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

from fp8stream import __version__
from fp8stream.formats.layers import FP8Layer, SkippedLayer, find_layers
from fp8stream.io.header import Header, OutputEntry

METADATA_PREFIX = "fp8stream."


class Role(enum.Enum):
    PASS = "pass"  # copied byte for byte
    MARKER = "marker"  # comfy_quant JSON, rewritten at the same size
    MOVED_SCALE = "moved_scale"  # an existing input scale: its value is read, it is written in the tail


@dataclass
class RewritePlan:
    header: Header
    layers: list[FP8Layer]
    skipped: list[SkippedLayer]
    entries: list[OutputEntry]
    metadata: dict[str, str] | None
    roles: dict[str, Role]
    # Input tensors whose values the calibration needs (weight scales, existing input scales).
    scalar_keys: set[str] = field(default_factory=set)
    layer_by_weight: dict[str, FP8Layer] = field(default_factory=dict)
    layer_by_marker: dict[str, FP8Layer] = field(default_factory=dict)

    @property
    def output_bytes(self) -> int:
        from fp8stream.io.header import encode_header

        blob, infos = encode_header(self.entries, self.metadata)
        return len(blob) + (infos[-1].end if infos else 0)


def output_metadata(header: Header, calibration: dict[str, object]) -> dict[str, str]:
    """Input metadata plus what decides our values; nothing that varies between runs."""
    metadata = dict(header.metadata or {})
    for key in [k for k in metadata if k.startswith(METADATA_PREFIX)]:
        del metadata[key]  # a second run describes itself, not the first
    metadata[METADATA_PREFIX + "version"] = __version__
    metadata[METADATA_PREFIX + "calibration"] = json.dumps(calibration, sort_keys=True, separators=(",", ":"))
    return metadata


def build_plan(header: Header, calibration: dict[str, object]) -> RewritePlan:
    """Plan every output tensor from the header; `calibration` is recorded in the metadata."""
    layers, skipped = find_layers(header)
    roles = {t.name: Role.PASS for t in header.tensors}
    plan = RewritePlan(header, layers, skipped, [], None, roles)
    for layer in layers:
        plan.layer_by_weight[layer.weight.name] = layer
        if layer.weight_scale:
            plan.scalar_keys.add(layer.weight_scale)
        if layer.marker:
            roles[layer.marker] = Role.MARKER
            plan.layer_by_marker[layer.marker] = layer
        if layer.existing_input_scale:
            roles[layer.existing_input_scale] = Role.MOVED_SCALE
            plan.scalar_keys.add(layer.existing_input_scale)
    plan.entries = [
        OutputEntry(t.name, t.dtype, t.shape, t.nbytes) for t in header.tensors if roles[t.name] is not Role.MOVED_SCALE
    ]
    plan.entries += [OutputEntry(layer.input_scale, "F32", (), 4) for layer in layers]
    plan.metadata = output_metadata(header, calibration)
    return plan
