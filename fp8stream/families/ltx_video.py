"""LTX-Video (detected only: no presets or model code yet)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family(
    "ltx-video", "dit",
    DetectionRule(("patchify_proj.weight", "transformer_blocks.27.scale_shift_table"), "diffusers: ltx-video",
                  "patchify_proj.weight", ("transformer_blocks.",)))
