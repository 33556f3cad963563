"""`--method heuristic`: input_scale = weight_scale x factor (default 0.5), the research note's approach 3.

Assumes nothing about the network: a layer's weight range says nothing about its input range;
measured by scripts/quality.py beside the other methods. Reads no weight bytes.
"""

from __future__ import annotations

from typing import Mapping

from fp8stream.calibration.interface import MethodPlan, ModelView, ScaleEstimate
from fp8stream.calibration.settings import CalibrationSettings
from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import TensorInfo


class HeuristicMethod:
    def __init__(self, settings: CalibrationSettings) -> None:
        self.factor = settings.factor

    def needs_random_access(self, model: ModelView) -> bool:
        return False  # it reads the stream as it passes

    def prepare(self, model: ModelView) -> MethodPlan:
        return MethodPlan(rows=False)

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        pass

    def close(self) -> None:
        """Nothing to release."""

    def weight_done(self, layer: FP8Layer) -> None:
        pass

    def observe_tensor(self, info: TensorInfo, chunk) -> None:
        pass

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        source = f"weight_scale x {self.factor:g} (no model of the input)"
        return {name: ScaleEstimate(ws * self.factor, source, margin=self.factor) for name, ws in weight_scales.items()}


def create(settings: CalibrationSettings) -> HeuristicMethod:
    return HeuristicMethod(settings)
