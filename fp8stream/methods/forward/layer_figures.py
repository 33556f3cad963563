"""One FP8 layer's figures on the full-precision stream's input (methods/forward/comparison.py,
for `check` and calibrate's prediction): FP8 as ComfyUI's matmul sees it, with a static scale
and with dynamic per-tensor scaling, against the full-precision output."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fp8stream.formats.comfy_runtime import LayerRun
from fp8stream.scales.fp8_maths import E4M3_MAX


def fp8_round_trip(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """x quantized to float8_e4m3fn with `scale` (clamped to +-448) and back, as ComfyUI's matmul
    sees it (a new tensor; the temporaries in place: one input's size at a time beside it)."""
    q = (x / scale).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(x.dtype)
    return q.mul_(scale)


def energy(t: torch.Tensor) -> float:
    """The sum of squares (float32 products summed by the BLAS: figures in dB, not bytes)."""
    flat = t.reshape(-1)
    return float(torch.dot(flat, flat))


def dynamic_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-tensor dynamic FP8: this call's input amax / 448 (a zero input gets the smallest normal)."""
    return (x.abs().max() / E4M3_MAX).clamp(min=torch.finfo(torch.float32).tiny)


@dataclass(frozen=True)
class Segment:
    """Output rows [start, stop) of a diffusers Linear that come from one checkpoint FP8 weight."""

    weight: str
    start: int
    stop: int
    run: LayerRun


@dataclass
class LayerFigures:
    """One checkpoint FP8 weight's one-layer figures on the full-precision stream's input."""

    amax: float = 0.0
    clipped: int = 0  # input values beyond 448 x the file's scale
    values: int = 0
    signal: float = 0.0  # sum of squares of the full-precision output
    static_noise: float = 0.0  # ... of the file's FP8 output minus it
    dynamic_noise: float = 0.0

    def add(self, amax: float, clipped: int, values: int, signal: float, static_noise: float,
            dynamic_noise: float) -> None:
        """One call's figures."""
        self.amax = max(self.amax, amax)
        self.clipped += clipped
        self.values += values
        self.signal += signal
        self.static_noise += static_noise
        self.dynamic_noise += dynamic_noise



def segment_linear(module: torch.nn.Module, x: torch.Tensor, s: Segment) -> torch.Tensor:
    """The Linear's output rows of segment `s` for input `x`."""
    bias = module.bias[s.start:s.stop] if module.bias is not None else None
    return F.linear(x, module.weight[s.start:s.stop], bias)


def _noise(module: torch.nn.Module, q: torch.Tensor, output: torch.Tensor, segments: list[Segment]) -> list[float]:
    """Each segment's error energy with the FP8 input `q`, one segment's output at a time."""
    return [energy(segment_linear(module, q, s).sub_(output[..., s.start:s.stop])) for s in segments]


def record(figures: dict[str, LayerFigures], module: torch.nn.Module, x: torch.Tensor, output: torch.Tensor,
           segments: list[Segment]) -> None:
    """Stream 1's one-layer figures of one call into `figures`, with each segment's run's scale;
    the temporaries one at a time (the other streams hold their activations meanwhile: this is
    the pass's peak)."""
    amax = float(x.abs().max()) if x.numel() else 0.0
    dynamic = _noise(module, fp8_round_trip(x, dynamic_scale(x)), output, segments)
    by_scale: dict[float | str, list[int]] = {}
    for k, s in enumerate(segments):
        by_scale.setdefault(_key(s.run.scale), []).append(k)
    for part in by_scale.values():
        scale = segments[part[0]].run.scale
        # a negative scale clips at its magnitude (the quantize's division and the matmul's
        # product both carry the sign); beyond a NaN one nothing compares
        clipped = int((x.abs() > E4M3_MAX * abs(scale)).sum())
        static = _noise(module, fp8_round_trip(x, scale), output, [segments[k] for k in part])
        for k, noise in zip(part, static, strict=True):
            s = segments[k]
            figures.setdefault(s.weight, LayerFigures()).add(
                amax, clipped, x.numel(), energy(output[..., s.start:s.stop]), noise, dynamic[k])


def _key(scale: float) -> float | str:
    """A scale as a key that groups equal scales, NaN with NaN (NaN == NaN is false)."""
    return "nan" if math.isnan(scale) else scale
