"""Wan 2.1 / 2.2 (text-to-video, image-to-video, TI2V-5B, VACE)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput


def variant(bare, width, blocks) -> str:
    """By width and input channels: 1.3B is 1536 wide, 14B 5120, Wan 2.2 TI2V-5B 3072 with 48
    channels; 16 channels is text-to-video, 36 image-to-video (2.1 has CLIP's img_emb, 2.2 not)."""
    channels = (bare.get("patch_embedding.weight") or (0, 0))[1]
    if "vace_blocks.0.after_proj.bias" in bare:
        return {1536: "wan-vace-1.3B", 5120: "wan-vace-14B"}.get(width, "wan-vace")
    if width == 3072 and channels == 48:
        return "wan2.2-ti2v-5B"
    size = {1536: "1.3B", 5120: "14B"}.get(width)
    if size is None:
        return "wan"
    if channels == 16:
        return f"wan-t2v-{size}"
    image = "img_emb.proj.1.weight" in bare
    return f"wan2.1-i2v-{size}" if image else f"wan2.2-i2v-{size}"


PRESETS = (
    ("patch_embedding", "embedder"), ("text_embedding.*", "embedder"), ("time_embedding.*", "embedder"),
    ("time_projection.*", "embedder"), ("img_emb.*", "embedder"), ("head.*", "final projection"),
    ("condition_embedder.*", "embedder"), ("proj_out", "final projection"),
)

FAMILY = Family(
    "wan", "dit",
    DetectionRule(("head.modulation",), "diffusers: wan", "patch_embedding.weight", ("blocks.",),
                  ("blocks.0.self_attn.q.weight", "blocks.0.cross_attn.q.weight")),
    variant,
    presets=PRESETS, edge_blocks=r"^blocks\.(\d+)\.",
    # image-to-video 2.1: the cross-attention reads the CLIP image tokens through k_img, v_img
    shared_inputs=(SharedInput(r"(^|.*\.)cross_attn$", ("k_img", "v_img")),))
