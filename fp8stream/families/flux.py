"""FLUX.1 (dev, schnell, fill, depth): BFL's double/single-stream DiT."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family


def variant(bare, width, blocks) -> str:
    """Schnell has no guidance embedder; fill and depth widen the image input (384, 128 channels)."""
    if "guidance_in.in_layer.weight" not in bare and "guidance_in.in_layer" not in bare:
        return "flux-schnell" if bare.get("img_in.weight") else "flux"
    channels = (bare.get("img_in.weight") or (0, 0))[1]
    return {384: "flux-fill", 128: "flux-depth"}.get(channels, "flux-dev")


# `--preset flux`: the embedders and the final projection (BFL's names, then diffusers')
PRESETS = (
    ("img_in", "embedder"), ("txt_in", "embedder"), ("time_in.*", "embedder"), ("vector_in.*", "embedder"),
    ("guidance_in.*", "embedder"), ("final_layer.*", "final projection"),
    # diffusers spelling
    ("x_embedder", "embedder"), ("context_embedder", "embedder"), ("time_text_embed.*", "embedder"),
    ("norm_out.*", "final projection"), ("proj_out", "final projection"),
)

FAMILY = Family(
    "flux", "dit",
    DetectionRule(("double_blocks.0.img_attn.norm.key_norm.scale",), "diffusers: flux", "img_in.weight",
                  ("double_blocks.", "single_blocks."),
                  ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"),
                  ("double_blocks.", "single_blocks.")),
    variant,
    presets=PRESETS)
