"""HiDream-I1 (diffusers' names)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

PRESETS = (  # diffusers' names
    ("x_embedder.*", "embedder"), ("t_embedder.*", "embedder"), ("p_embedder.*", "embedder"),
    ("caption_projection.*", "embedder"), ("final_layer.*", "final projection"),
)

FAMILY = Family(
    "hidream", "dit",
    DetectionRule(("double_stream_blocks.0.block.adaLN_modulation.1.bias",), "diffusers: hidream",
                  "x_embedder.proj.weight", ("double_stream_blocks.", "single_stream_blocks."),
                  ("double_stream_blocks.0.block.adaLN_modulation.1.weight",)),
    presets=PRESETS)
