"""FLUX.3 (detected only: no presets or model code yet)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family

FAMILY = Family("flux3", "dit",
                DetectionRule(("early_stream_modulations.image.lin.weight",), "diffusers: flux3", "img_in.weight"))
