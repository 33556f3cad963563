"""Cosmos 1.0 and Cosmos Predict2."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, holds


def variant(bare, width, blocks) -> str:
    """Cosmos 1.0 nests its blocks (blocks.blockN.blocks.M.block); Predict2 2B is 2048 wide, 14B 5120."""
    if holds(bare, "blocks.block0.blocks.0.block.attn.to_q.0.weight"):
        return {4096: "cosmos-1.0-7B", 5120: "cosmos-1.0-14B"}.get(width, "cosmos-1.0")
    return {2048: "cosmos-predict2-2B", 5120: "cosmos-predict2-14B"}.get(width, "cosmos-predict2")


PRESETS = (
    ("x_embedder.*", "embedder"), ("t_embedder.*", "embedder"), ("crossattn_proj.*", "embedder"),
    ("img_context_proj.*", "embedder"), ("final_layer.*", "final projection"),
)

FAMILY = Family(
    "cosmos", "dit",
    DetectionRule(("blocks.block0.blocks.0.block.attn.to_q.0.weight", "blocks.0.self_attn.q_proj.weight"),
                  "diffusers: cosmos-1.0, cosmos-2.0", "x_embedder.proj.1.weight", ("blocks.",)),
    variant,
    presets=PRESETS, edge_blocks=r"^blocks\.(?:block)?(\d+)\.")
