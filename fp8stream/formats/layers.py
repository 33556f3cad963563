"""What an FP8 linear layer looks like on disk, found from the header alone.

A header-only decision is what lets a pipe work: the output header must be out before any
value arrives (DESIGN §1). Each flavour is recognised from names, dtypes and shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fp8stream.formats.comfy_quant import MAX_MARKER_BYTES
from fp8stream.io.header import Header, TensorInfo

COMFY = "comfy"  # L.weight F8_E4M3 + L.weight_scale + L.comfy_quant, scale at L.input_scale


@dataclass(frozen=True)
class FP8Layer:
    """An FP8 linear layer that gets an activation scale."""

    name: str  # the layer prefix, in the file's own spelling
    flavour: str
    weight: TensorInfo
    weight_scale: str | None  # key of the weight scale tensor, None when 1.0 is implied
    input_scale: str  # key the activation scale is written under
    existing_input_scale: str | None  # key of a scale already in the file
    marker: str | None  # key of the comfy_quant tensor

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


def is_scalar(info: TensorInfo | None) -> bool:
    return info is not None and info.numel == 1 and len(info.shape) <= 1


_NUM_RE = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Sort key that puts blocks.2 before blocks.10."""
    return [int(p) if p.isdigit() else p for p in _NUM_RE.split(name)]


def find_layers(header: Header) -> tuple[list[FP8Layer], list[SkippedLayer]]:
    """Every FP8 linear of ComfyUI's mixed-precision format, and the quantized tensors we skip."""
    layers: list[FP8Layer] = []
    skipped: list[SkippedLayer] = []
    for info in header.tensors:
        if not info.name.endswith(".weight") or not info.dtype.startswith("F8_"):
            continue
        name = info.name[: -len(".weight")]
        marker = header.get(f"{name}.comfy_quant")
        weight_scale = header.get(f"{name}.weight_scale")
        if info.dtype != "F8_E4M3":
            skipped.append(SkippedLayer(name, f"{info.dtype} weight: only float8_e4m3fn takes an input scale"))
        elif len(info.shape) != 2:
            skipped.append(SkippedLayer(name, f"{len(info.shape)}-D FP8 weight (convolution), not a linear"))
        elif marker is None:
            skipped.append(SkippedLayer(name, "FP8 weight without a comfy_quant marker (format not supported yet)"))
        elif marker.dtype != "U8" or len(marker.shape) != 1 or marker.nbytes > MAX_MARKER_BYTES:
            skipped.append(SkippedLayer(name, "comfy_quant marker is not a small 1-D U8 tensor"))
        elif weight_scale is None or weight_scale.dtype != "F32" or not is_scalar(weight_scale):
            skipped.append(SkippedLayer(name, "weight_scale is not one F32 value: not the tensor-wise float8_e4m3fn layout"))
        else:
            existing = header.get(f"{name}.input_scale")
            layers.append(
                FP8Layer(
                    name=name,
                    flavour=COMFY,
                    weight=info,
                    weight_scale=weight_scale.name,
                    input_scale=f"{name}.input_scale",
                    existing_input_scale=existing.name if existing is not None else None,
                    marker=marker.name,
                )
            )
    layers.sort(key=lambda layer: natural_key(layer.name))
    skipped.sort(key=lambda s: natural_key(s.name))
    return layers, skipped
