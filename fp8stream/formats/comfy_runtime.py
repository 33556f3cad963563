"""How ComfyUI runs each FP8 linear of a file as it stands (docs/comfyui.md), read from its
header and its small tensors (scales, markers): the input scale it quantizes with, or that it
runs the layer weight-only (full precision).

- Weight-only: a comfy layer whose `full_precision_matrix_mult` is true (the marker, or the
  `_quantization_metadata` entry that overrides it), every layer of a legacy file whose
  `scaled_fp8` marker has 2 elements, and every text-encoder layer (ComfyUI runs text encoders
  weight-only whatever the file says).
- Otherwise the FP8 matmul path with the stored `input_scale` (`scale_input`); no stored scale
  means 1.0 (a legacy `scale_input` of exactly 1.0 is dropped, which is 1.0 again), and a
  placeholder is used as stored (1.0, or a copy of weight_scale). A stored scale that is not one
  positive finite value is judged unusable and taken as missing (1.0), with the reason.

`stored_verdict` is `formats.existing_scales.judge_existing_scale`'s: whether the stored scale
is a real one (kept by `calibrate`) or a placeholder, and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from fp8stream.formats.comfy_quant import MarkerError, is_weight_only, parse_marker
from fp8stream.formats.existing_scales import judge_existing_scale, usable_scale
from fp8stream.formats.layers import FP8Layer, take_inventory
from fp8stream.io.dtypes import decode_values
from fp8stream.io.header import Header

NO_SCALE = "no input_scale: ComfyUI uses 1.0"


class SmallTensors(Protocol):
    def get(self, name: str) -> bytes: ...


@dataclass(frozen=True)
class LayerRun:
    """One FP8 linear as ComfyUI runs it."""

    layer: str  # the layer's name in the file
    weight: str  # its weight tensor's name
    scale: float  # the input scale of the FP8 matmul (1.0 where the file gives none)
    weight_only: bool  # ComfyUI dequantizes the weight and runs a full-precision matmul
    why: str  # where the scale (or the weight-only choice) comes from
    stored: float | None  # the input scale stored in the file, None where there is none
    real_scale: bool  # the stored scale is a real one (not missing, a placeholder or unusable)


def _values(source: SmallTensors, header: Header, key: str) -> list[float]:
    try:
        return decode_values(source.get(key), header.get(key).dtype)
    except ValueError:
        return []


def flagged_weight_only(layer: FP8Layer, read: Callable[[str], bytes]) -> bool | None:
    """The file's weight-only flag: from the header where it tells, else from the marker's JSON
    (`read`: a small tensor's bytes by name); None where the marker is not readable JSON."""
    if layer.weight_only is not None or layer.marker is None:
        return layer.weight_only
    try:
        return is_weight_only(parse_marker(read(layer.marker)))
    except MarkerError:
        return None


def _weight_only(layer: FP8Layer, source: SmallTensors) -> tuple[bool, str]:
    if layer.text_encoder:
        return True, "text encoder: ComfyUI runs it weight-only"
    return bool(flagged_weight_only(layer, source.get)), "flagged weight-only (full_precision_matrix_mult)"


def layer_run(layer: FP8Layer, header: Header, source: SmallTensors) -> LayerRun:
    """How ComfyUI runs `layer`."""
    weight_scale = _values(source, header, layer.weight_scale) if layer.weight_scale else [1.0]
    stored = _values(source, header, layer.existing_input_scale) if layer.existing_input_scale else None
    weight_only, why_only = _weight_only(layer, source)
    real, verdict = judge_existing_scale(stored, weight_scale[0] if weight_scale else 1.0, weight_only, False)
    one = stored[0] if stored and len(stored) == 1 else None
    usable = one is not None and usable_scale(one)
    scale = one if usable else 1.0
    if weight_only:
        why = why_only
    elif stored is None:
        why = NO_SCALE
    elif not usable:
        why = f"{verdict}: ComfyUI cannot use it (taken as 1.0)"
    else:
        why = verdict
    return LayerRun(layer.name, layer.weight.name, scale, weight_only, why, one, real)


def comfy_runs(header: Header, source: SmallTensors) -> dict[str, LayerRun]:
    """Every FP8 linear of the file (the inventory's), by weight tensor name."""
    return {layer.weight.name: layer_run(layer, header, source) for layer in take_inventory(header).layers}
