"""One layer's own scale as a method gives it, and what it rests on (the report's `basis`).

Plain data, shared by every method, the margin rule (margin.py), the pipeline and the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from fp8stream.scales.layer_warning import LayerWarning

# What a scale rests on, as the report's `basis` says it.
MEASURED = "measured"  # real data recorded by fp8stream.record
FORWARD_PASS = "forward pass"  # the synthetic forward pass
GIVEN = "given"  # a scale read from a stats file
ASSUMED = "assumed"  # a model of the input, or a heuristic


@dataclass(frozen=True)
class ScaleEstimate:
    """One layer's own scale and where it came from (one line a reviewer can check)."""

    scale: float
    source: str
    warnings: tuple[LayerWarning, ...] = ()
    amax: float | None = None  # the input range the scale covers (scale x 448), when known
    bound: float | None = None  # a proven upper bound of |input|, when the method has one
    margin: float | None = None  # the factor applied to a measured or estimated amax
    # the bound rests on an assumed range of a model input (a warning says which): reported, no proof
    assumed: bool = False
    basis: str = ASSUMED
