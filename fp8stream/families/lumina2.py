"""Lumina Image 2.0 (NextDiT)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput
from fp8stream.families.next_dit import next_dit_block
from fp8stream.families.spec import TensorSpec, linear, norms

PRESETS = (
    ("x_embedder", "embedder"), ("t_embedder.*", "embedder"), ("cap_embedder.*", "embedder"),
    ("final_layer.*", "final projection"),
)


# For scripts/bench.py --arch (`families.inventory`):
# Lumina-Image 2.0 at real size (original / ComfyUI names): dim 2304, 24 query heads of 96
# and 8 key/value heads (fused qkv of 3840 rows), 26 layers plus 2 noise and 2 context refiner
# blocks, gated FFN 9216, Gemma-2 caption states of 2304, 2x2 patches of 16 channels (2.6B
# parameters). Block linears in FP8.


def _block(p: str, d: int, modulated: bool) -> list[TensorSpec]:
    return next_dit_block(p, d, d + 2 * 768, 9216, 96, (4 * d, 1024) if modulated else None)


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d = 2304
    n = 26 if blocks is None else blocks
    specs = linear("x_embedder", d, 64, False) + linear("t_embedder.mlp.0", 1024, 256, False)
    specs += linear("t_embedder.mlp.2", 1024, 1024, False)
    specs += norms("cap_embedder.0.weight", width=2304) + linear("cap_embedder.1", d, 2304, False)
    for i in range(2):
        specs += _block(f"noise_refiner.{i}", d, True) + _block(f"context_refiner.{i}", d, False)
    for i in range(n):
        specs += _block(f"layers.{i}", d, True)
    return specs + linear("final_layer.adaLN_modulation.1", d, 1024, False) + linear("final_layer.linear", 64, d, False)


FAMILY = Family(
    "lumina2", "dit",
    DetectionRule(("cap_embedder.0.weight",), "diffusers: lumina2", "x_embedder.weight", ("layers.",),
                  ("layers.0.adaLN_modulation.1.weight",)),
    presets=PRESETS,
    shared_inputs=(SharedInput(r"(^|.*\.)feed_forward$", ("w1", "w3")),),  # gated FFN: gate, up
    inventories=(("lumina2", inventory),))
