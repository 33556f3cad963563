"""CLIP-L / CLIP-G text encoders (transformers' names)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family(
    "clip", "text",
    DetectionRule(("text_model.encoder.layers.0.self_attn.q_proj.weight",), "ours (CLIP-L/G text)", "",
                  ("text_model.encoder.layers.",), name_prefixes=("text_model.encoder.layers.",)),
    layer_pattern=r"(^|\.)text_model\.encoder\.layers\.\d+\.",
    layer_names=("text_projection",))  # CLIP-G's projection of the pooled output
