"""What an FP8 linear layer looks like on disk, found from the header alone.

A header-only decision is what lets a pipe work: the output header must be out before any
value arrives (docs/formats.md). Three flavours are recognised from names, dtypes and shapes:

- comfy: `L.weight` F8_E4M3 2-D, F32 scalar `L.weight_scale`, a `L.comfy_quant` marker tensor
  and/or an entry in `__metadata__["_quantization_metadata"]`;
- legacy: `L.weight` F8_E4M3 2-D, F32 scalar `L.scale_weight`, a top-level `scaled_fp8` marker;
- plain: `L.weight` F8_E4M3 2-D and no scale at all (1.0 implied).

Every other quantized weight is passed through and reported with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fp8stream.families import is_text_encoder_layer
from fp8stream.formats import legacy
from fp8stream.formats.comfy_quant import MAX_MARKER_BYTES, TENSORWISE_FP8, is_weight_only
from fp8stream.formats.quant_metadata import QuantMetadata, read_quant_metadata
from fp8stream.io.header import Header, TensorInfo
from fp8stream.names.suffixes import (
    COMFY_MARKER,
    INPUT_SCALE,
    LEGACY_INPUT_SCALE,
    LEGACY_WEIGHT_SCALE,
    WEIGHT,
    WEIGHT_SCALE,
    layer_of,
)

COMFY = "comfy"  # L.weight F8_E4M3 + L.weight_scale + L.comfy_quant, scale at L.input_scale
LEGACY = "legacy"  # L.weight F8_E4M3 + L.scale_weight + top-level scaled_fp8, scale at L.scale_input
PLAIN = "plain"  # L.weight F8_E4M3 alone: weight scale 1.0 implied

# Why other comfy_quant formats take no input scale from us (docs/comfyui.md).
_OTHER_FORMAT_NOTES = {
    "nvfp4": "nvfp4 measures its activation scale at run time when none is stored",
    "mxfp8": "mxfp8 ignores input_scale",
    "float8_e5m2": "float8_e5m2 is not the tensor-wise e4m3 layout",
}


@dataclass(frozen=True)
class FP8Layer:
    """An FP8 linear layer that can get an activation scale (input-side facts, header only)."""

    name: str  # the layer prefix, in the file's own spelling
    flavour: str
    weight: TensorInfo
    weight_scale: str | None  # key of the weight scale tensor, None when 1.0 is implied
    existing_input_scale: str | None  # key of a scale already in the file
    marker: str | None  # key of the comfy_quant tensor (comfy flavour; may be absent with metadata)
    # Whether ComfyUI runs it weight-only as the file stands; None when only the marker bytes,
    # which arrive later in the stream, can tell.
    weight_only: bool | None
    text_encoder: bool = False

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]


@dataclass(frozen=True)
class SkippedLayer:
    """A quantized tensor we pass through untouched, and why."""

    name: str
    reason: str


@dataclass
class LayerInventory:
    """What the header holds: calibratable layers, skipped ones, and the file-level markers."""

    layers: list[FP8Layer]
    skipped: list[SkippedLayer]
    legacy_marker: TensorInfo | None
    quant_metadata: QuantMetadata | None
    names: set[str]  # every tensor name of the checkpoint

    @property
    def flavours(self) -> set[str]:
        return {layer.flavour for layer in self.layers}


def is_scalar(info: TensorInfo | None) -> bool:
    return info is not None and info.numel == 1 and len(info.shape) <= 1


def is_f32_scalar(info: TensorInfo | None) -> bool:
    return is_scalar(info) and info.dtype == "F32"


_NUM_RE = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that puts blocks.2 before blocks.10."""
    return [int(p) if p.isdigit() else p for p in _NUM_RE.split(name)]


def _other_format_reason(fmt: object) -> str:
    note = _OTHER_FORMAT_NOTES.get(str(fmt), "only tensor-wise float8_e4m3fn uses input_scale")
    return f"comfy_quant format {fmt!r}: {note}"


def _comfy_skip_reason(header: Header, name: str, info: TensorInfo, meta_doc: dict | None) -> str | None:
    """Why a layer with a comfy_quant marker or metadata entry is not ours, or None."""
    if meta_doc is not None and meta_doc.get("format") != TENSORWISE_FP8:
        return _other_format_reason(meta_doc.get("format")) + " (from _quantization_metadata)"
    marker = header.get(name + COMFY_MARKER)
    if marker is not None and (marker.dtype != "U8" or len(marker.shape) != 1 or marker.nbytes > MAX_MARKER_BYTES):
        return "comfy_quant marker is not a small 1-D U8 tensor"
    if info.dtype == "U8":
        return "packed 4-bit weight (nvfp4): it measures its activation scale at run time when none is stored"
    if info.dtype in ("I8", "U8") or info.dtype.startswith("I"):
        return f"{info.dtype} weight (int8_*): int8 formats do not quantize inputs with a stored scale"
    if not info.dtype.startswith("F8_"):
        return f"{info.dtype} weight with a comfy_quant marker: not an FP8 layer"
    weight_scale = header.get(name + WEIGHT_SCALE)
    if weight_scale is None or not is_f32_scalar(weight_scale):
        what = weight_scale.dtype + str(list(weight_scale.shape)) if weight_scale else "missing"
        return (f"weight_scale {what} is not one F32 value: a block/row-wise layout (mxfp8, rowwise, blockwise), "
                "not tensor-wise float8_e4m3fn")
    return None


def _common_skip_reason(info: TensorInfo) -> str | None:
    if info.dtype != "F8_E4M3":
        return f"{info.dtype} weight: only float8_e4m3fn takes an input scale"
    if len(info.shape) != 2:
        return f"{len(info.shape)}-D FP8 weight (convolution), not a linear"
    return None


def take_inventory(header: Header) -> LayerInventory:
    """Every FP8 linear of the three flavours, the skipped quantized tensors, and file markers."""
    meta = read_quant_metadata(header.metadata)
    legacy_marker = legacy.find_marker(header)
    layers: list[FP8Layer] = []
    skipped: list[SkippedLayer] = []
    for info in header.tensors:
        if not info.name.endswith(WEIGHT):
            continue
        name = layer_of(info.name)
        marker = header.get(name + COMFY_MARKER)
        meta_doc = meta.layer_doc(name) if meta is not None else None
        if marker is None and meta_doc is None and not info.dtype.startswith("F8_"):
            continue  # an ordinary unquantized weight
        reason = None
        if marker is not None or meta_doc is not None:
            reason = _comfy_skip_reason(header, name, info, meta_doc) or _common_skip_reason(info)
            flavour = COMFY
            weight_scale = name + WEIGHT_SCALE
            input_scale = name + INPUT_SCALE
        elif header.get(name + LEGACY_WEIGHT_SCALE) is not None:
            flavour = LEGACY
            weight_scale = name + LEGACY_WEIGHT_SCALE
            input_scale = name + LEGACY_INPUT_SCALE
            reason = _common_skip_reason(info)
            if reason is None and not is_f32_scalar(header.get(weight_scale)):
                reason = "scale_weight is not one F32 value"
            if reason is None and legacy_marker is None:
                reason = "scale_weight without a top-level scaled_fp8 marker: ComfyUI does not read it"
        elif header.get(name + WEIGHT_SCALE) is not None:
            reason = "weight_scale without a comfy_quant marker: ComfyUI would not read it as FP8"
            flavour, weight_scale, input_scale = COMFY, "", ""
        else:
            flavour, weight_scale, input_scale = PLAIN, "", ""
            reason = _common_skip_reason(info)
        if reason is not None:
            skipped.append(SkippedLayer(name, reason))
            continue
        existing = header.get(input_scale) if input_scale else None
        if flavour == COMFY:
            weight_only = is_weight_only(meta_doc) if meta_doc is not None else None
        elif flavour == LEGACY:
            weight_only = legacy.marker_is_weight_only(legacy_marker)
        else:
            weight_only = False
        layers.append(
            FP8Layer(
                name=name,
                flavour=flavour,
                weight=info,
                weight_scale=weight_scale or None,
                existing_input_scale=existing.name if existing is not None else None,
                marker=marker.name if marker is not None else None,
                weight_only=weight_only,
                text_encoder=is_text_encoder_layer(name),
            )
        )
    layers.sort(key=lambda layer: natural_key(layer.name))
    skipped.sort(key=lambda s: natural_key(s.name))
    return LayerInventory(layers, skipped, legacy_marker, meta, set(header.by_name))
