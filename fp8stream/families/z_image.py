"""Z-Image (Lumina 2's NextDiT layout)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput
from fp8stream.families.next_dit import next_dit_block
from fp8stream.families.spec import TensorSpec, linear, norms

PRESETS = (
    ("x_embedder", "embedder"), ("t_embedder.*", "embedder"), ("cap_embedder.*", "embedder"),
    ("final_layer.*", "final projection"),
)

# it carries Lumina 2's cap_embedder: tried before it


# For scripts/bench.py --arch (`families.inventory`):
# Z-Image (Turbo) at real size (original / ComfyUI names): dim 3840 (30 heads of 128), 30
# layers plus 2 noise and 2 context refiner blocks, fused qkv, gated FFN 10240, Qwen3 caption
# states of 2560, 2x2 patches of 16 channels (6B parameters). Block linears in FP8.


def _block(p: str, d: int, modulated: bool) -> list[TensorSpec]:
    return next_dit_block(p, d, 3 * d, 10240, 128, (4 * d, 256) if modulated else None, "adaLN_modulation.0")


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d = 3840
    n = 30 if blocks is None else blocks
    specs = [TensorSpec("x_pad_token", (1, d), False), TensorSpec("cap_pad_token", (1, d), False)]
    specs += linear("x_embedder", d, 64, False) + linear("t_embedder.mlp.0", 1024, 256, False)
    specs += linear("t_embedder.mlp.2", 256, 1024, False)
    specs += norms("cap_embedder.0.weight", width=2560) + linear("cap_embedder.1", d, 2560, False)
    for i in range(2):
        specs += _block(f"noise_refiner.{i}", d, True) + _block(f"context_refiner.{i}", d, False)
    for i in range(n):
        specs += _block(f"layers.{i}", d, True)
    return specs + linear("final_layer.adaLN_modulation.1", d, 256, False) + linear("final_layer.linear", 64, d, False)


FAMILY = Family(
    "z-image", "dit",
    DetectionRule(("layers.0.adaLN_modulation.0.weight",), "diffusers: z-image-turbo", "x_embedder.weight",
                  ("layers.",)),
    presets=PRESETS,
    shared_inputs=(SharedInput(r"(^|.*\.)feed_forward$", ("w1", "w3")),),
    inventories=(("z-image", inventory),))  # gated FFN: gate, up
