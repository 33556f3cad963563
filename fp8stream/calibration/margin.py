"""The one rule that turns a measured input range into a scale: a margin, capped by the proof.

    covered = min(margin x amax, hard bound)        scale = covered / 448

`amax` is what was seen on inputs that are not the ones the model will run: the synthetic
forward pass (`--method forward`, margin 3) or real data recorded on other prompts (`--method
stats`, margin 2). The margin covers what was not seen; the hard bound of `--method simulate`
(Cauchy-Schwarz through the producers' weights) proves the input never exceeds it, so a range
above it is never needed. The bound caps only when it is a proof from the file alone: one that
rests on an assumption about a model input (its notes say "ASSUMED") is reported, not applied.
Both methods and the quality harness call this function; nothing else applies a margin.
"""

from __future__ import annotations

import math

from fp8stream.calibration.fp8 import E4M3_MAX
from fp8stream.calibration.interface import ScaleEstimate


def is_proof(bound: ScaleEstimate) -> bool:
    """Whether a hard-bound estimate rests on the file alone (no assumed model input)."""
    return not any("ASSUMED" in w for w in bound.warnings)


def with_margin(amax: float, margin: float, bound: ScaleEstimate | None, label: str,
                warnings: tuple[str, ...] = ()) -> ScaleEstimate:
    """The scale covering `margin x amax`, capped by `bound` (simulate's hard bound, or None)
    where that bound is a proof. `label` says where amax comes from; the source line reads
    `{label} {amax} x margin {m}` and then how the bound acted."""
    covered = margin * amax
    how = f"{label} {amax:.4g} x margin {margin:g}"
    limit = None
    if bound is not None:
        limit = bound.scale * E4M3_MAX  # the bound as the bound method would write it
        if is_proof(bound) and limit < covered:
            covered, how = limit, how + f", capped by the hard bound {limit:.4g}"
        else:
            how += f"; bound {limit:.4g}" + ("" if is_proof(bound) else " (rests on an assumption: not a cap)")
    if not (covered > 0 and math.isfinite(covered)):
        return ScaleEstimate(1.0, how, warnings + ("no usable range: scale 1.0",), bound=limit, margin=margin)
    return ScaleEstimate(covered / E4M3_MAX, how, warnings, amax=covered, bound=limit, margin=margin)
