"""Calibration methods: where a layer's activation range comes from.

A method sees the checkpoint as it streams past, one chunk of rows at a time, keeps only small
per-layer statistics, and at the end gives each layer an `input_scale`. The stream engine
(`fp8stream.rewrite`) never holds a whole weight for it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch

from fp8stream.calibration.fp8 import E4M3_MAX, dequantize_rows
from fp8stream.calibration.rules import apply_rule
from fp8stream.formats.layers import FP8Layer


# Weight elements dequantized at once (4 MB of F32): bounds the memory of the maths.
_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class CalibrationSettings:
    """Every option that changes the scales' values (recorded in the output's metadata)."""

    method: str = "simulate"
    rule: str = "max"
    percentile: float = 99.99
    samples: int = 64
    seed: int = 0
    device: str = "cpu"  # resolved: "cpu" or "cuda"
    sim_mode: str = "bound"  # simulate: bound | hybrid | note (simulate.py)
    margin: float = 4.0  # simulate --sim-mode hybrid: times the Gaussian estimate
    factor: float = 0.5  # heuristic: input_scale = weight_scale x factor
    stats: str | None = None  # stats: the stats file
    map: str | None = None  # stats: user name pairs
    fallback: str | None = None  # stats: "simulate" for layers without stats

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"method": self.method, "rule": self.rule}
        if self.rule == "percentile":
            out["percentile"] = self.percentile
        if self.method == "heuristic":
            return {"method": self.method, "factor": self.factor}
        if self.method == "stats":
            import os

            out["stats"] = os.path.basename(self.stats or "")
            if self.map:
                out["map"] = os.path.basename(self.map)
            if self.fallback:
                out["fallback"] = self.fallback
        if self.method == "simulate" or self.fallback == "simulate":
            out.update({"sim_mode": self.sim_mode, "samples": self.samples, "seed": self.seed})
            if self.sim_mode == "hybrid":
                out["margin"] = self.margin
        out["device"] = self.device
        return out


@dataclass
class ScaleEstimate:
    """A layer's scale and what the method assumed to get it."""

    scale: float
    assumption: str
    warnings: list[str] = field(default_factory=list)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from fp8stream.errors import UsageError

        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


def layer_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from the run's seed and the layer's bare name (model prefix
    removed): order-independent, and a prefixed checkpoint gets the same scales as a bare one."""
    from fp8stream.formats.prefixes import bare_name

    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + zlib.crc32(bare_name(name).encode("utf-8"))) % (2**63))
    return g


class GaussianOutputMethod:
    """The research note's approach 2: unit-normal inputs through the layer's own weight.

    Assumes the layer's input has the range of its own output for N(0, 1) inputs, which is a
    guess, not a model of the network (docs/methods.md: measured at 0.17-2.6x the real scale).
    Samples are drawn on the CPU from a per-layer seed, so CPU and CUDA see the same inputs.
    """

    name = "simulate"

    def __init__(self, settings: CalibrationSettings) -> None:
        self.settings = settings
        self.device = torch.device(settings.device)
        self._inputs: dict[str, torch.Tensor] = {}
        self._outputs: dict[str, list[torch.Tensor]] = {}
        self._unit_amax: dict[str, float] = {}

    def observe_weight(self, layer: FP8Layer, rows: torch.Tensor, row_start: int) -> None:
        """rows: uint8 [r, in] on self.device, rows row_start.. of the layer's weight."""
        x = self._inputs.get(layer.name)
        if x is None:
            g = layer_generator(self.settings.seed, layer.name)
            x = torch.randn(self.settings.samples, layer.in_features, generator=g).to(self.device)
            self._inputs[layer.name] = x
        # Dequantize a bounded block at a time: an F32 copy of a whole chunk would be 4x its bytes.
        step = max(1, _BLOCK_ELEMENTS // layer.in_features)
        for start in range(0, rows.shape[0], step):
            w = dequantize_rows(rows[start : start + step], torch.float32)
            if not torch.isfinite(w).all():
                w = torch.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
            self._outputs.setdefault(layer.name, []).append((x @ w.T).abs().cpu())

    def weight_done(self, layer: FP8Layer) -> None:
        samples = torch.cat(self._outputs.pop(layer.name, [torch.zeros(0)]), dim=1)
        self._inputs.pop(layer.name, None)
        self._unit_amax[layer.name] = apply_rule(self.settings.rule, samples, self.settings.percentile) if samples.numel() else 0.0

    def estimate(self, layer: FP8Layer, weight_scale: float) -> ScaleEstimate:
        amax = self._unit_amax[layer.name] * weight_scale
        warnings = []  # NaN in the weight is reported by calibration.suspicious; here it is ignored
        assumption = f"input range = output range of N(0,1) through the weight ({self.settings.rule})"
        if not (amax > 0.0 and amax < float("inf")):
            warnings.append("no usable range (all-zero weight?): scale 1.0")
            return ScaleEstimate(1.0, assumption, warnings)
        return ScaleEstimate(amax / E4M3_MAX, assumption, warnings)


class HeuristicMethod:
    """The research note's approach 3: input_scale = weight_scale x factor (default 0.5).

    Assumes nothing about the network: a layer's weight range says nothing about its input
    range (docs/methods.md); measured by scripts/quality.py beside the other methods."""

    name = "heuristic"

    def __init__(self, settings: CalibrationSettings) -> None:
        self.settings = settings

    def observe_weight(self, layer: FP8Layer, rows: torch.Tensor, row_start: int) -> None:
        pass

    def weight_done(self, layer: FP8Layer) -> None:
        pass

    def estimate(self, layer: FP8Layer, weight_scale: float) -> ScaleEstimate:
        f = self.settings.factor
        return ScaleEstimate(weight_scale * f, f"weight_scale x {f:g} (no model of the input)", [])


def _simulate(settings: CalibrationSettings):
    if settings.sim_mode == "note":
        return GaussianOutputMethod(settings)
    from fp8stream.calibration.simulate import WeightAwareMethod

    return WeightAwareMethod(settings)


def _stats(settings: CalibrationSettings):
    from fp8stream.calibration.stats import StatsMethod

    return StatsMethod(settings)


METHODS = {"simulate": _simulate, "stats": _stats, "heuristic": HeuristicMethod}
SIM_MODES = ("bound", "hybrid", "note")


def make_method(settings: CalibrationSettings):
    return METHODS[settings.method](settings)
