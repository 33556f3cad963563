"""The one rule that turns a measured input range into a scale: a margin, capped by the proof.

    covered = min(margin x amax, hard bound)        scale = covered / 448

`amax` is what was seen on inputs that are not the ones the model will run: the synthetic
forward pass (`--method forward`, margin 3) or real data recorded on other prompts (`--method
stats`, margin 2). The margin covers what was not seen; the hard bound of `--method simulate`
(Cauchy-Schwarz through the producers' weights) proves the input never exceeds it, so a range
above it is never needed. The bound caps only when it is a proof from the file alone: one that
rests on an assumption about a model input (`ScaleEstimate.assumed`) is reported, not applied.
Both methods and the quality harness call this function; nothing else applies a margin.
"""

from __future__ import annotations

import math

from fp8stream.scales.estimate import ScaleEstimate
from fp8stream.scales.fp8_maths import E4M3_MAX
from fp8stream.scales.layer_warning import LayerWarning, WarningKind

NO_RANGE = LayerWarning(WarningKind.NO_RANGE, "no usable range: scale 1.0")


def is_proof(bound: ScaleEstimate) -> bool:
    """Whether a hard-bound estimate rests on the file alone (no assumed model input)."""
    return not bound.assumed


def with_margin(amax: float, margin: float, bound: ScaleEstimate | None, label: str,
                warnings: tuple[LayerWarning, ...] = (), align_cap: bool = False, *, basis: str) -> ScaleEstimate:
    """The scale covering `margin x amax`, capped by `bound` (simulate's hard bound, or None)
    where that bound is a proof. `label` says where amax comes from; the source line reads
    `{label} {amax} x margin {m}` and then how the bound acted. With `align_cap` and a
    power-of-two margin, a cap is rounded up to amax x 2^k: scaling by a power of two keeps
    every value's FP8 rounding as it is at the amax (the forward pass's text encoders, whose
    few large outliers carry the signal), and it never goes below the bound. `basis`: what amax
    is (interface.py: MEASURED, FORWARD_PASS)."""
    covered = margin * amax
    how = f"{label} {amax:.4g} x margin {margin:g}"
    limit = None
    if bound is not None:
        limit = bound.scale * E4M3_MAX  # the bound as the bound method would write it
        if is_proof(bound) and limit < covered:
            cap = _aligned(amax, limit) if align_cap and _power_of_two(margin) else limit
            covered, how = min(cap, covered), how + f", capped by the hard bound {limit:.4g}"
            how += " rounded up to a power-of-two multiple of the amax" if cap != limit else ""
        else:
            how += f"; bound {limit:.4g}" + ("" if is_proof(bound) else " (rests on an assumption: not a cap)")
    if not (covered > 0 and math.isfinite(covered)):
        return ScaleEstimate(1.0, how, warnings + (NO_RANGE,), bound=limit, margin=margin,
                             basis=basis)
    return ScaleEstimate(covered / E4M3_MAX, how, warnings, amax=covered, bound=limit, margin=margin, basis=basis)


def _power_of_two(x: float) -> bool:
    return x > 0 and math.frexp(x)[0] == 0.5


def _aligned(amax: float, bound: float) -> float:
    """The smallest amax x 2^k (k >= 0) that is >= bound: the bound, on the amax's FP8 grid."""
    return amax * 2.0 ** max(0, math.ceil(math.log2(bound / amax)))
