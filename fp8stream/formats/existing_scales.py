"""Whether an activation scale already in the file is a real one worth keeping.

Converters write placeholders: exactly 1.0 (Comfy-Org's own FP8 files, on every layer) or
exactly the layer's weight_scale. Keeping those would keep the noise this tool removes, and a
scale on a weight-only layer was never used, so it proves nothing either (docs/formats.md).
"""

from __future__ import annotations

import math


def usable_scale(value: float) -> bool:
    """A stored input scale ComfyUI can use: one positive finite value (0, negative, NaN and
    infinite are not)."""
    return math.isfinite(value) and value > 0.0


def judge_existing_scale(
    values: list[float] | None, weight_scale: float, weight_only: bool, overwrite: bool
) -> tuple[bool, str]:
    """(keep, why) for an existing input scale; `values` None means there is none."""
    if values is None:
        return False, "no scale in the file"
    if overwrite:
        return False, "--overwrite-scales"
    if len(values) != 1:
        return False, "existing scale is not a single value"
    value = values[0]
    if not usable_scale(value):
        return False, f"existing scale {value} is not positive and finite"
    if weight_only:
        return False, "layer was weight-only: its scale was never used"
    if value == 1.0:
        return False, "placeholder 1.0"
    if value == weight_scale:
        return False, "placeholder equal to weight_scale"
    return True, "calibrated scale already present"
