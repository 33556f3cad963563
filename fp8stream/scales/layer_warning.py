"""A layer's warning as it crosses the method interface (ScaleEstimate.warnings) and the report:
its text, and what it is about, by which the report picks its fix (advice.py), never by its words."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class WarningKind(Enum):
    """What a layer's warning is about: the report picks its fix by the kind (advice.py), never by
    the warning's words (which carry tensor names and the forward pass's reasons)."""

    EXTREME_RANGE = "extreme range"  # an estimated or recorded amax past EXTREME_AMAX
    RANGE_UNCERTAIN = "range uncertain"  # the bound far above the estimate
    ASSUMED_INPUT = "assumed input"  # the bound rests on an assumed range of a model input
    NO_STATS = "no stats"  # --method stats: the layer fell back to simulate
    NO_HISTOGRAM = "no histogram"  # a histogram rule asked of stats recorded without one
    NEVER_REACHED = "never reached"  # the recorded amax is 0
    NAN_WEIGHT = "NaN weight"  # NaN bytes in the FP8 weight
    EMPTY_WEIGHT = "empty weight"  # an all-zero FP8 weight
    ZERO_INPUT = "zero input"  # the forward pass gave the layer an all-zero input (so: the hard bound)
    BAD_WEIGHT_SCALE = "bad weight scale"  # weight_scale not positive and finite
    NO_RANGE = "no usable range"  # no range to scale from: scale 1.0
    NO_SPOOL = "no spool"  # --no-spool kept a stream from the forward pass
    OTHER = "other"


@dataclass(frozen=True)
class LayerWarning:
    """One warning about a layer, as the report prints it, and what it is about."""

    kind: WarningKind
    text: str
