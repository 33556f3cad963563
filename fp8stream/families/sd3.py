"""Stable Diffusion 3 / 3.5 (MMDiT, `joint_blocks`)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family


def variant(bare, width, blocks) -> str:
    """SD3 medium and SD3.5 medium are 1536 wide (24 blocks; 3.5 has the second attention),
    SD3.5 large 2432 (38 blocks); fewer blocks than the full model: pruned."""
    dual = any(k.endswith(".x_block.attn2.qkv.weight") for k in bare)
    name, full = {1536: ("sd3.5-medium" if dual else "sd3-medium", 24),
                  2432: ("sd3.5-large", 38)}.get(width, ("sd3", 0))
    if full and blocks and blocks[0] < full:
        return f"{name} pruned to {blocks[0]} blocks"
    return name


PRESETS = (
    ("x_embedder.*", "embedder"), ("context_embedder", "embedder"), ("t_embedder.*", "embedder"),
    ("y_embedder.*", "embedder"), ("final_layer.*", "final projection"),
    ("time_text_embed.*", "embedder"), ("norm_out.*", "final projection"), ("proj_out", "final projection"),
)

FAMILY = Family(
    "sd3", "dit",
    DetectionRule(("joint_blocks.0.context_block.adaLN_modulation.1.bias", "joint_blocks.37.x_block.mlp.fc1.weight"),
                  "diffusers: sd3, sd35_large", "x_embedder.proj.weight", ("joint_blocks.",),
                  ("joint_blocks.0.x_block.attn.qkv.weight", "joint_blocks.0.context_block.attn.qkv.weight"),
                  ("joint_blocks.",)),
    variant,
    presets=PRESETS)
