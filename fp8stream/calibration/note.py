"""`--method simulate --sim-mode note`: the research note's approach 2, kept for comparison.

Unit-normal inputs through the layer's own weight: assumes the layer's input has the range of
its own output for N(0, 1) inputs, which is a guess, not a model of the network (measured at
0.17-2.6x the real scale; see the README's quality tables). Samples are drawn on the CPU from a
per-layer seed, so CPU and CUDA see the same inputs.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from fp8stream.calibration.fp8 import E4M3_MAX, dequantize_rows
from fp8stream.calibration.interface import MethodPlan, ModelView, ScaleEstimate
from fp8stream.calibration.layer_warning import LayerWarning, WarningKind
from fp8stream.calibration.rules import apply_rule
from fp8stream.calibration.sampling import layer_generator
from fp8stream.calibration.settings import CalibrationSettings
from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import TensorInfo

# Weight elements dequantized at once (4 MB of F32): bounds the memory of the maths.
BLOCK_ELEMENTS = 1 << 20


class GaussianOutputMethod:
    def __init__(self, settings: CalibrationSettings) -> None:
        self.settings = settings
        self.device = torch.device(settings.device)
        self._inputs: dict[str, torch.Tensor] = {}
        self._outputs: dict[str, list[torch.Tensor]] = {}
        self._unit_amax: dict[str, float] = {}

    def needs_random_access(self, model: ModelView) -> bool:
        return False  # it reads the stream as it passes

    def prepare(self, model: ModelView) -> MethodPlan:
        return MethodPlan()

    def observe_tensor(self, info: TensorInfo, chunk) -> None:
        pass

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        """rows: uint8 [r, in] (numpy on the CPU, else torch on self.device), rows row_start.. of
        the layer's weight."""
        rows = torch.from_numpy(rows) if isinstance(rows, np.ndarray) else rows
        x = self._inputs.get(layer.name)
        if x is None:
            g = layer_generator(self.settings.seed, layer.name)
            x = torch.randn(self.settings.samples, layer.in_features, generator=g).to(self.device)
            self._inputs[layer.name] = x
        # Dequantize a bounded block at a time: an F32 copy of a whole chunk would be 4x its bytes.
        step = max(1, BLOCK_ELEMENTS // layer.in_features)
        for start in range(0, rows.shape[0], step):
            w = dequantize_rows(rows[start : start + step], torch.float32)
            if not torch.isfinite(w).all():
                w = torch.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
            self._outputs.setdefault(layer.name, []).append((x @ w.T).abs().cpu())

    def close(self) -> None:
        """Nothing to release."""

    def weight_done(self, layer: FP8Layer) -> None:
        samples = torch.cat(self._outputs.pop(layer.name, [torch.zeros(0)]), dim=1)
        self._inputs.pop(layer.name, None)
        rule, pct = self.settings.rule, self.settings.percentile
        self._unit_amax[layer.name] = apply_rule(rule, samples, pct) if samples.numel() else 0.0

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        return {name: self._estimate(name, ws) for name, ws in weight_scales.items()}

    def _estimate(self, name: str, weight_scale: float) -> ScaleEstimate:
        amax = self._unit_amax[name] * weight_scale
        source = f"input range = output range of N(0,1) through the weight ({self.settings.rule})"
        if not (amax > 0.0 and amax < float("inf")):  # NaN weights are reported by calibration.suspicious
            warning = LayerWarning(WarningKind.NO_RANGE, "no usable range (all-zero weight?): scale 1.0")
            return ScaleEstimate(1.0, source, (warning,))
        return ScaleEstimate(amax / E4M3_MAX, source, (), amax=amax)


def create(settings: CalibrationSettings) -> GaussianOutputMethod:
    return GaussianOutputMethod(settings)
