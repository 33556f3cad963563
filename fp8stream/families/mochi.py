"""Mochi 1 (detected only)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family("mochi", "dit", DetectionRule(("blocks.0.attn.qkv_x.weight",), "diffusers: mochi-1-preview"))
