"""The one place that spells the names of an FP8 layer's tensors, `L` being the layer prefix
(formats/layers.py says what each flavour holds, docs/formats.md why):

- comfy: `L.weight`, `L.weight_scale`, `L.input_scale`, `L.comfy_quant` (the per-layer marker);
- legacy: `L.weight`, `L.scale_weight`, `L.scale_input`, and one top-level `scaled_fp8` marker,
  bare or under a model prefix (`model.diffusion_model.scaled_fp8`);
- any module: `L.weight`, `L.bias` (PyTorch's parameter names).
"""

from __future__ import annotations

from collections.abc import Container

WEIGHT = ".weight"
BIAS = ".bias"
WEIGHT_SCALE = ".weight_scale"
INPUT_SCALE = ".input_scale"
COMFY_MARKER = ".comfy_quant"
LEGACY_WEIGHT_SCALE = ".scale_weight"
LEGACY_INPUT_SCALE = ".scale_input"
LEGACY_MARKER = "scaled_fp8"

WEIGHT_SCALES = (WEIGHT_SCALE, LEGACY_WEIGHT_SCALE)  # comfy's first: tried first
INPUT_SCALES = (INPUT_SCALE, LEGACY_INPUT_SCALE)
# a layer's FP8 companions, beside its weight (diffusers' converters do not know them)
COMPANIONS = (*WEIGHT_SCALES, *INPUT_SCALES, COMFY_MARKER)


def layer_of(weight: str) -> str:
    """`L.weight` -> `L` (the caller knows the name ends in `.weight`)."""
    return weight[: -len(WEIGHT)]


def is_legacy_marker(name: str) -> bool:
    return name == LEGACY_MARKER or name.endswith("." + LEGACY_MARKER)


def is_companion(name: str) -> bool:
    """A scale or marker of an FP8 layer, either flavour, or the legacy file marker."""
    return name.endswith(COMPANIONS) or is_legacy_marker(name)


def weight_scale_of(layer: str, names: Container[str]) -> str | None:
    """The key of the layer's weight scale among `names` (comfy's, else legacy's), None if neither."""
    return next((layer + s for s in WEIGHT_SCALES if layer + s in names), None)
