"""Chroma: Flux's blocks with a distilled guidance layer instead of per-block modulation."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

PRESETS = (
    ("img_in", "embedder"), ("txt_in", "embedder"),
    ("distilled_guidance_layer.*", "embedder (modulation approximator)"),
    ("final_layer.*", "final projection"),
)

# it carries Flux's double_blocks: tried before Flux
FAMILY = Family(
    "chroma", "dit",
    DetectionRule(("distilled_guidance_layer.in_proj.bias",), "diffusers: chroma", "img_in.weight",
                  ("double_blocks.", "single_blocks."), ("distilled_guidance_layer.in_proj.weight",)),
    presets=PRESETS)
