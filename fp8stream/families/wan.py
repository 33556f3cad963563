"""Wan 2.1 / 2.2 (text-to-video, image-to-video, TI2V-5B, VACE)."""

from __future__ import annotations

from fp8stream.families.family import DetectionRule, Family, SharedInput
from fp8stream.families.spec import TensorSpec, linear as _linear


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


# Wan 2.x inventories at real size (ComfyUI names), for scripts/bench.py --arch.
#
# Wan 2.1-14B and each of Wan 2.2's A14B experts (high noise, low noise) share one layout; i2v's
# experts read 36 latent channels (16 + 4 mask + 16 image latent) and have no CLIP image branch.
# TI2V-5B: dim 3072, FFN 14336, 30 blocks, 48 latent channels (Wan 2.2's VAE).


def wan_14b(blocks: int | None = None) -> list[TensorSpec]:
    """Wan2.1-14B-class video DiT: dim 5120, FFN 13824, 40 blocks (14B parameters)."""
    return wan_dit(5120, 13824, 40 if blocks is None else blocks)


def wan_dit(d: int, ffn: int, n: int, in_channels: int = 16, out_channels: int = 16) -> list[TensorSpec]:
    """A Wan 2.x DiT (T2V layout, heads 128 wide) of width d, FFN width ffn and n blocks."""
    specs: list[TensorSpec] = [TensorSpec("patch_embedding.weight", (d, in_channels, 1, 2, 2), False),
                               TensorSpec("patch_embedding.bias", (d,), False)]
    specs += _linear("text_embedding.0", d, 4096, False) + _linear("text_embedding.2", d, d, False)
    specs += _linear("time_embedding.0", d, 256, False) + _linear("time_embedding.2", d, d, False)
    specs += _linear("time_projection.1", 6 * d, d, False)
    for i in range(n):
        p = f"blocks.{i}"
        specs.append(TensorSpec(f"{p}.modulation", (1, 6, d), False))
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                specs += _linear(f"{p}.{attn}.{proj}", d, d, True)
            specs += [TensorSpec(f"{p}.{attn}.norm_q.weight", (d,), False),
                      TensorSpec(f"{p}.{attn}.norm_k.weight", (d,), False)]
        specs += [TensorSpec(f"{p}.norm3.weight", (d,), False), TensorSpec(f"{p}.norm3.bias", (d,), False)]
        specs += _linear(f"{p}.ffn.0", ffn, d, True) + _linear(f"{p}.ffn.2", d, ffn, True)
    specs += [TensorSpec("head.modulation", (1, 2, d), False)] + _linear("head.head", 4 * out_channels, d, False)
    return specs


def ti2v_5b(blocks: int | None = None) -> list[TensorSpec]:
    """Wan 2.2 TI2V-5B."""
    return wan_dit(3072, 14336, 30 if blocks is None else blocks, in_channels=48, out_channels=48)


def i2v_a14b(blocks: int | None = None) -> list[TensorSpec]:
    """One expert of Wan 2.2 I2V-A14B (the other has the same layout)."""
    return wan_dit(5120, 13824, 40 if blocks is None else blocks, in_channels=36, out_channels=16)


FAMILY = Family(
    "wan", "dit",
    DetectionRule(("head.modulation",), "diffusers: wan", "patch_embedding.weight", ("blocks.",),
                  ("blocks.0.self_attn.q.weight", "blocks.0.cross_attn.q.weight")),
    variant,
    presets=PRESETS, edge_blocks=r"^blocks\.(\d+)\.",
    # image-to-video 2.1: the cross-attention reads the CLIP image tokens through k_img, v_img
    shared_inputs=(SharedInput(r"(^|.*\.)cross_attn$", ("k_img", "v_img")),),
    inventories=(("wan", wan_14b), ("wan22-5b", ti2v_5b), ("wan22-i2v-a14b", i2v_a14b)))
