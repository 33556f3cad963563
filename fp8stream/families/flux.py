"""FLUX.1 (dev, schnell, fill, depth): BFL's double/single-stream DiT."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family


def variant(bare, width, blocks) -> str:
    """Schnell has no guidance embedder; fill and depth widen the image input (384, 128 channels)."""
    if "guidance_in.in_layer.weight" not in bare and "guidance_in.in_layer" not in bare:
        return "flux-schnell" if bare.get("img_in.weight") else "flux"
    channels = (bare.get("img_in.weight") or (0, 0))[1]
    return {384: "flux-fill", 128: "flux-depth"}.get(channels, "flux-dev")


FAMILY = Family(
    "flux", "dit",
    DetectionRule(("double_blocks.0.img_attn.norm.key_norm.scale",), "diffusers: flux", "img_in.weight",
                  ("double_blocks.", "single_blocks."),
                  ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"),
                  ("double_blocks.", "single_blocks.")),
    variant)
