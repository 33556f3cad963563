"""Sana (detected only)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family("sana", "dit", DetectionRule(("blocks.0.cross_attn.q_linear.weight",), "diffusers: sana"))
