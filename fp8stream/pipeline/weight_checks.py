"""Suspicious weights: reported in a layer's warnings, never silently used.

NaN in an FP8 weight (e4m3fn has no Inf: bytes 0x7f and 0xff are NaN), an all-zero weight,
and a weight_scale or existing input_scale that is NaN, infinite, zero or negative. The weight
is checked as its rows stream past, on their raw bytes: no decoding; on the host into one reused
buffer, on a GPU (where the rows are for the bound and the pass) with two temporaries the size of
the rows checked.
"""

from __future__ import annotations

import math

import numpy as np

from fp8stream.formats.existing_scales import usable_scale
from fp8stream.formats.layers import FP8Layer
from fp8stream.scales.layer_warning import LayerWarning, WarningKind

_MAGNITUDE_BITS = 0x7F  # e4m3fn without its sign bit: 0 is ±0, 0x7f is NaN


class WeightChecks:
    """Counts NaN bytes and notes non-zero bytes of each FP8 weight as its rows stream past."""

    def __init__(self) -> None:
        self._nan: dict[str, int] = {}
        self._nonzero: set[str] = set()
        self._scratch = np.empty(0, dtype=np.uint8)
        # rows checked on a GPU: (layer, NaN count, any other non-zero), still there; read back
        # once, when the first warning is asked for (a read-back per chunk would wait on the GPU)
        self._on_device: list[tuple[str, object, object]] = []

    def observe(self, layer: FP8Layer, rows) -> None:
        """rows: raw FP8 bytes (uint8) of some rows of the layer's weight, a numpy array on the
        CPU or a torch tensor on the device."""
        if isinstance(rows, np.ndarray):
            self._observe_host(layer, rows)
        elif rows.numel():  # two temporaries the size of `rows` at a time, five calls
            magnitude = rows & _MAGNITUDE_BITS
            nan = (magnitude == _MAGNITUDE_BITS).sum()
            magnitude.sub_(1)  # uint8: 0 -> 255, NaN 0x7f -> 0x7e; a finite non-zero value below 0x7e
            self._on_device.append((layer.name, nan, (magnitude < _MAGNITUDE_BITS - 1).any()))

    def _observe_host(self, layer: FP8Layer, rows: np.ndarray) -> None:
        if not rows.size:
            return
        # Into a reused buffer: a fresh 8 MB temporary per chunk costs page faults.
        if self._scratch.size < rows.size:
            self._scratch = np.empty(rows.size, dtype=np.uint8)
        out = self._scratch[: rows.size].reshape(rows.shape)
        # numpy, not torch: torch's parallel max leaves its OpenMP threads spinning on the
        # core the row sums need (measured: a fifth of the CPU of a 2-core run)
        magnitude = np.bitwise_and(rows, _MAGNITUDE_BITS, out=out)
        top = int(magnitude.max())
        # Common case in two passes: some value is non-zero and none is NaN (the largest
        # magnitude byte is below 0x7f). Counting NaNs is needed only when one is there.
        if top == _MAGNITUDE_BITS:
            is_nan = magnitude == _MAGNITUDE_BITS
            self._note(layer.name, int(is_nan.sum()), bool(((magnitude != 0) & ~is_nan).any()))
        elif top:
            self._nonzero.add(layer.name)

    def _note(self, name: str, nan: int, nonzero: bool) -> None:
        if nan:
            self._nan[name] = self._nan.get(name, 0) + nan
        if nonzero:
            self._nonzero.add(name)

    def _settle(self) -> None:
        if not self._on_device:
            return
        import torch

        names = [name for name, _, _ in self._on_device]
        nans = torch.stack([n for _, n, _ in self._on_device]).tolist()
        nonzero = torch.stack([z for _, _, z in self._on_device]).tolist()
        self._on_device.clear()
        for name, nan, any_nonzero in zip(names, nans, nonzero, strict=True):
            self._note(name, nan, any_nonzero)

    def warnings(self, layer: FP8Layer, weight_scale: float, input_scale: list[float] | None) -> list[LayerWarning]:
        """What is suspicious about the layer; `input_scale` is the file's existing scale, if any."""
        self._settle()
        out = []
        nan = self._nan.get(layer.name, 0)
        if nan:
            values = f"{nan} NaN value{'s' if nan > 1 else ''} (of {layer.weight.numel})"
            out.append(LayerWarning(WarningKind.NAN_WEIGHT, f"FP8 weight holds {values}"))
        if layer.name not in self._nonzero:  # with NaN bytes too, the NaN is what needs fixing
            out.append(LayerWarning(WarningKind.NAN_WEIGHT if nan else WarningKind.EMPTY_WEIGHT,
                                    "FP8 weight is all zero" + (" apart from NaN" if nan else "")))
        if not math.isfinite(weight_scale):
            out.append(LayerWarning(WarningKind.BAD_WEIGHT_SCALE, f"weight_scale is {weight_scale}"))
        elif weight_scale <= 0.0:
            sign = "zero" if weight_scale == 0.0 else "negative"
            out.append(LayerWarning(WarningKind.BAD_WEIGHT_SCALE, f"weight_scale is {sign} ({weight_scale})"))
        bad = [v for v in input_scale or [] if not usable_scale(v)]
        if bad:
            out.append(LayerWarning(WarningKind.OTHER, f"existing input_scale is {bad[0]}: not positive and finite"))
        return out
