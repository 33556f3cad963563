"""Qwen-Image 2.1 (detected only)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family("qwen-image-2.1", "dit", DetectionRule(("txt_in.text_norm.weight",), "diffusers: qwen-image-2.1"))
