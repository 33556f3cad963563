"""How ComfyUI runs each FP8 linear of a file as it stands (docs/comfyui.md), read from its
header and its small tensors (scales, markers): the input scale it quantizes with, that it runs
the layer weight-only (full precision), or that it stops with an error on it. Checked against
ComfyUI's own loader and `Linear.forward` by scripts/comfy_truth.py.

- Weight-only: a comfy layer whose `full_precision_matrix_mult` is true in Python's sense (the
  marker, or the `_quantization_metadata` entry that overrides it), every layer of a legacy file
  whose `scaled_fp8` marker has 2 elements, and every text-encoder layer (ComfyUI runs text
  encoders weight-only whatever the file says).
- Otherwise the FP8 matmul path with the stored `input_scale` (`scale_input`) as stored: no
  stored scale means 1.0 (a legacy `scale_input` of exactly 1.0 is dropped, which is 1.0 again),
  a placeholder is used as it is, and so is a value that is not positive and finite (ComfyUI
  checks none: 0 saturates every input and leaves the bias alone, NaN and infinite give NaN, a
  negative one runs as its magnitude).
- ComfyUI stops with an error on: an input scale that is not one F32 value on the FP8 path, a
  legacy `scale_input` of other than one value (its loader reads every one), and a
  `_quantization_metadata` entry that is a bare format name.

`stored_verdict` is `formats.existing_scales.judge_existing_scale`'s: whether the stored scale
is a real one (kept by `calibrate`) or a placeholder, and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

from fp8stream.formats.comfy_quant import MarkerError, is_weight_only, parse_marker
from fp8stream.formats.existing_scales import judge_existing_scale, usable_scale
from fp8stream.formats.layers import LEGACY, FP8Layer, take_inventory
from fp8stream.formats.quant_metadata import QuantMetadata
from fp8stream.io.dtypes import decode_values
from fp8stream.io.header import Header

NO_SCALE = "no input_scale: ComfyUI uses 1.0"
TEXT_ENCODER = "text encoder: ComfyUI runs it weight-only"
FLAGGED = "flagged weight-only (full_precision_matrix_mult)"


class SmallTensors(Protocol):
    def get(self, name: str) -> bytes: ...


@dataclass(frozen=True)
class LayerRun:
    """One FP8 linear as ComfyUI runs it."""

    layer: str  # the layer's name in the file
    weight: str  # its weight tensor's name
    scale: float  # the input scale of the FP8 matmul: as stored, 1.0 where none, NaN where ComfyUI stops
    weight_only: bool  # ComfyUI dequantizes the weight and runs a full-precision matmul
    why: str  # where the scale (or the weight-only choice) comes from
    stored: float | None  # the input scale stored in the file, None where there is none (or not one value)
    real_scale: bool  # the stored scale is a real one (not missing, a placeholder or unusable)
    stops: bool = False  # ComfyUI stops with an error on this layer (loading it, or its FP8 call): no output


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


def _stops(layer: FP8Layer, values: StoredValues, weight_only: bool,
           quant_metadata: QuantMetadata | None) -> str | None:
    """Why ComfyUI stops with an error on the layer, or None."""
    if quant_metadata is not None and quant_metadata.is_bare(layer.name):
        return "_quantization_metadata entry is a bare format name: ComfyUI's loader reads an object and stops"
    if values.entry is None:
        return None
    numel, dtype = values.entry
    if layer.flavour == LEGACY and numel != 1:  # convert_old_quants reads every scale_input as one value
        return f"scale_input of {numel} values: ComfyUI's legacy loader reads one and stops"
    if weight_only or (layer.flavour == LEGACY and values.stored == [1.0]):  # not used, or dropped
        return None
    if numel != 1:
        return f"input_scale of {numel} values: ComfyUI's FP8 quantize takes one and stops"
    if dtype != "F32":
        return f"input_scale stored as {dtype}: ComfyUI's FP8 quantize takes F32 only and stops"
    return None


def _as_stored(value: float) -> str:
    """What ComfyUI's quantize makes of a stored scale that is not positive and finite."""
    if value == 0.0:
        return "every input saturates and the layer outputs its bias alone"
    if not math.isfinite(value):
        return "the layer's output is NaN"
    return f"the sign cancels: it runs as {-value:g}"


@dataclass(frozen=True)
class StoredValues:
    """What ComfyUI reads of one layer besides its weight: its weight scale, the input scale
    stored (None: none) and its entry's (values, dtype), its weight-only flag as read."""

    weight_scale: float
    stored: list[float] | None
    entry: tuple[int, str] | None
    flagged: bool


WRITTEN_SCALE = (1, "F32")  # the entry of an input scale calibrate writes


def stored_values(layer: FP8Layer, header: Header, source: SmallTensors) -> StoredValues:
    """The layer's values as the file holds them (a text encoder's marker is not read)."""
    weight_scale = _values(source, header, layer.weight_scale) if layer.weight_scale else [1.0]
    info = header.get(layer.existing_input_scale) if layer.existing_input_scale else None
    stored = _values(source, header, info.name) if info is not None else None
    flagged = layer.text_encoder or bool(flagged_weight_only(layer, source.get))
    return StoredValues(weight_scale[0] if weight_scale else 1.0, stored,
                        None if info is None else (info.numel, info.dtype), flagged)


def layer_run(layer: FP8Layer, header: Header, source: SmallTensors,
              quant_metadata: QuantMetadata | None) -> LayerRun:
    """How ComfyUI runs `layer` (`quant_metadata`: the file's, as the inventory read it)."""
    return run_of(layer, stored_values(layer, header, source), quant_metadata)


def run_of(layer: FP8Layer, values: StoredValues, quant_metadata: QuantMetadata | None) -> LayerRun:
    """How ComfyUI runs `layer` with these values (calibrate's prediction gives those it writes)."""
    weight_only, why_only = (True, TEXT_ENCODER) if layer.text_encoder else (values.flagged, FLAGGED)
    stored = values.stored
    real, verdict = judge_existing_scale(stored, values.weight_scale, weight_only, False)
    one = stored[0] if stored and len(stored) == 1 else None
    stops = _stops(layer, values, weight_only, quant_metadata)
    if stops is not None:
        return LayerRun(layer.name, layer.weight.name, math.nan, False, stops, one, False, stops=True)
    scale = 1.0 if one is None else one
    if weight_only:  # the scale is never used: the figures show what a cleared flag would give
        return LayerRun(layer.name, layer.weight.name, scale, True, why_only, one, real)
    if stored is None:
        return LayerRun(layer.name, layer.weight.name, 1.0, False, NO_SCALE, None, real)
    why = verdict if usable_scale(one) else f"{verdict}: ComfyUI quantizes with it as stored ({_as_stored(one)})"
    return LayerRun(layer.name, layer.weight.name, one, False, why, one, real)


def comfy_runs(header: Header, source: SmallTensors) -> dict[str, LayerRun]:
    """Every FP8 linear of the file (the inventory's), by weight tensor name."""
    inventory = take_inventory(header)
    return {layer.weight.name: layer_run(layer, header, source, inventory.quant_metadata)
            for layer in inventory.layers}
