"""AuraFlow (detected only)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family("auraflow", "dit", DetectionRule(("double_layers.0.attn.w2q.weight",), "diffusers: auraflow"))
