"""BERT-style text encoders (transformers' names)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family(
    "bert", "text", DetectionRule(("encoder.layer.0.attention.self.query.weight",), "ours", "", ("encoder.layer.",)),
    layer_pattern=r"(^|\.)encoder\.layer\.\d+\.(attention|intermediate|output)\.")
