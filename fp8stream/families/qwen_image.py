"""Qwen-Image (and its edit models): ComfyUI's files use diffusers' names."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

PRESETS = (  # diffusers' names
    ("img_in", "embedder"), ("txt_in", "embedder"), ("time_text_embed.*", "embedder"),
    ("norm_out.*", "final projection"), ("proj_out", "final projection"),
)

# ComfyUI tests txt_norm
FAMILY = Family(
    "qwen-image", "dit",
    DetectionRule(("txt_norm.weight",), "ours (ComfyUI: txt_norm)", "img_in.weight", ("transformer_blocks.",),
                  ("transformer_blocks.0.img_mod.1.weight",)),
    presets=PRESETS)
