"""Suspicious weights: reported in a layer's warnings, never silently used.

NaN in an FP8 weight (e4m3fn has no Inf: bytes 0x7f and 0xff are NaN), an all-zero weight,
and a weight_scale or existing input_scale that is NaN, infinite, zero or negative. The weight
is checked chunk by chunk as it streams past, on its raw bytes: no decoding, no extra memory.
"""

from __future__ import annotations

import math

import torch

from fp8stream.formats.layers import FP8Layer

_MAGNITUDE_BITS = 0x7F  # e4m3fn without its sign bit: 0 is ±0, 0x7f is NaN


class WeightChecks:
    """Counts NaN bytes and notes non-zero bytes of each FP8 weight as its rows stream past."""

    def __init__(self) -> None:
        self._nan: dict[str, int] = {}
        self._nonzero: set[str] = set()

    def observe(self, layer: FP8Layer, rows: torch.Tensor) -> None:
        """rows: raw FP8 bytes (uint8) of some rows of the layer's weight."""
        magnitude = rows & _MAGNITUDE_BITS
        nan = int((magnitude == _MAGNITUDE_BITS).sum())
        if nan:
            self._nan[layer.name] = self._nan.get(layer.name, 0) + nan
        if layer.name not in self._nonzero and bool(((magnitude != 0) & (magnitude != _MAGNITUDE_BITS)).any()):
            self._nonzero.add(layer.name)

    def warnings(self, layer: FP8Layer, weight_scale: float, input_scale: list[float] | None) -> list[str]:
        """What is suspicious about the layer; `input_scale` is the file's existing scale, if any."""
        out = []
        nan = self._nan.get(layer.name, 0)
        if nan:
            out.append(f"FP8 weight holds {nan} NaN value{'s' if nan > 1 else ''} (of {layer.weight.numel})")
        if layer.name not in self._nonzero:
            out.append("FP8 weight is all zero" + (" apart from NaN" if nan else ""))
        if not math.isfinite(weight_scale):
            out.append(f"weight_scale is {weight_scale}")
        elif weight_scale <= 0.0:
            out.append(f"weight_scale is {'zero' if weight_scale == 0.0 else 'negative'} ({weight_scale})")
        bad = [v for v in input_scale or [] if not (math.isfinite(v) and v > 0.0)]
        if bad:
            out.append(f"existing input_scale is {bad[0]}: not positive and finite")
        return out
