"""Z-Image (Lumina 2's NextDiT layout)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput

PRESETS = (
    ("x_embedder", "embedder"), ("t_embedder.*", "embedder"), ("cap_embedder.*", "embedder"),
    ("final_layer.*", "final projection"),
)

# it carries Lumina 2's cap_embedder: tried before it
FAMILY = Family(
    "z-image", "dit",
    DetectionRule(("layers.0.adaLN_modulation.0.weight",), "diffusers: z-image-turbo", "x_embedder.weight",
                  ("layers.",)),
    presets=PRESETS,
    shared_inputs=(SharedInput(r"(^|.*\.)feed_forward$", ("w1", "w3")),))  # gated FFN: gate, up
