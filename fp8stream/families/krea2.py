"""Krea 2 (detected only)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family("krea2", "dit", DetectionRule(("txtfusion.projector.weight",), "diffusers: krea2"))
