"""HiDream-I1 (diffusers' names)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family(
    "hidream", "dit",
    DetectionRule(("double_stream_blocks.0.block.adaLN_modulation.1.bias",), "diffusers: hidream",
                  "x_embedder.proj.weight", ("double_stream_blocks.", "single_stream_blocks."),
                  ("double_stream_blocks.0.block.adaLN_modulation.1.weight",)))
