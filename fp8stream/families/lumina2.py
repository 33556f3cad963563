"""Lumina Image 2.0 (NextDiT)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput

PRESETS = (
    ("x_embedder", "embedder"), ("t_embedder.*", "embedder"), ("cap_embedder.*", "embedder"),
    ("final_layer.*", "final projection"),
)

FAMILY = Family(
    "lumina2", "dit",
    DetectionRule(("cap_embedder.0.weight",), "diffusers: lumina2", "x_embedder.weight", ("layers.",),
                  ("layers.0.adaLN_modulation.1.weight",)),
    presets=PRESETS,
    shared_inputs=(SharedInput(r"(^|.*\.)feed_forward$", ("w1", "w3")),))  # gated FFN: gate, up
