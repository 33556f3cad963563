"""The one report note on the output format: what the format written could not express of the
method's choices, what the default did instead, and what the other target would add."""

from __future__ import annotations

from typing import Mapping

from fp8stream.formats.layers import COMFY, LEGACY, PLAIN
from fp8stream.formats.plan_types import LayerPlan

TO_COMFY = "--target comfy writes ComfyUI's current format"


def format_note(plans: list[LayerPlan], scaled_weight_only: Mapping[str, str]) -> list[str]:
    """At most one note: a legacy output (kept weight-only whole, layers that run FP8 where
    ComfyUI's format keeps them weight-only, or as read), or plain FP8 layers given a format."""
    legacy_plans = [p for p in plans if p.out_flavour == LEGACY]
    if legacy_plans and all(p.drops_input_scale for p in legacy_plans):
        return []  # no layer gets a scale in any format: the method's own note says so
    if legacy_plans:
        return [_legacy_note(legacy_plans, scaled_weight_only)]
    if any(p.layer.flavour == PLAIN and p.out_flavour == COMFY for p in plans):
        return ["plain FP8 layers (no scale, no marker) written in ComfyUI's format: a comfy_quant marker and "
                "weight_scale 1.0 each; --target legacy writes the legacy scaled_fp8 format instead"]
    return []


def _legacy_note(plans: list[LayerPlan], scaled_weight_only: Mapping[str, str]) -> str:
    unscaled = sum(1 for p in plans if p.drops_input_scale)
    if unscaled:
        rest = f"which keeps only those weight-only and scales the other {len(plans) - unscaled}"
        return (f"the legacy scaled_fp8 format has no per-layer weight-only flag and {_layers(unscaled)} no scale "
                f"without a guess: the whole file is kept weight-only through its scaled_fp8 marker, no layer "
                f"scaled; {TO_COMFY}, {rest}")
    fp8 = [p.layer.name for p in plans if p.calibrated and p.layer.name in scaled_weight_only]
    if not fp8:
        return f"written in the legacy scaled_fp8 format; {TO_COMFY}, which can keep single layers weight-only"
    more = f" and {len(fp8) - 1} more" if len(fp8) > 1 else ""
    return (f"the legacy scaled_fp8 format has no per-layer weight-only flag: {fp8[0]}{more}, which the method "
            "keeps weight-only in ComfyUI's format (conditioning path), run FP8 here with their measured scale, as "
            f"--forward-conditioning fp8 would; {TO_COMFY}, which keeps them weight-only")


def _layers(n: int) -> str:
    return "1 layer gets" if n == 1 else f"{n} layers get"
