"""Wan 2.1 / 2.2 (text-to-video, image-to-video, TI2V-5B, VACE)."""

from __future__ import annotations

import re

from fp8stream.families.family import DetectionRule, Family, SharedInput
from fp8stream.families.graph_types import Act, AdaLN, External, Norm, ProducerGraph, Sinusoid, Source, Vec
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


# The producer graph of the bound (`--method simulate`): where each linear's input comes from.
# Wan:         time_embedding.0 / .2, time_projection.1 ..... sinusoid / SiLU / SiLU(e), e0 = time_projection(e)
#              blocks.N.self_attn.q/k/v, ffn.0 .............. LN(x)·(1+scale)+shift, chunks 0/1, 3/4 of e0
#                                                              plus the block's own bias blocks.N.modulation
#              blocks.N.self_attn.o, cross_attn.o ........... attention mix of v (self_attn.v / cross_attn.v)
#              blocks.N.cross_attn.q ........................ affine LayerNorm blocks.N.norm3
#              blocks.N.cross_attn.k/v ...................... text states: text_embedding.2 output
#              blocks.N.ffn.2 ................................ GELU(ffn.0)
#              text_embedding.0 / .2, head.head ............. T5 states / GELU(text_embedding.0) /
#                                                              AdaLN (head.modulation)


def sources(name: str, has: set[str]) -> Source | None:
    m = re.fullmatch(r"blocks\.(\d+)\.(self_attn|cross_attn)\.(q|k|v|o)", name)
    if m:
        b, kind, what = m.groups()
        p = f"blocks.{b}."
        if what == "o":
            return Act("attn", f"{p}{kind}.v")
        if kind == "self_attn":
            return AdaLN("time_projection.1", 0, 1, 6, extra_bias=p + "modulation")
        if what == "q":
            return Norm(p + "norm3.weight", p + "norm3.bias")
        return Act("id", "text_embedding.2")
    m = re.fullmatch(r"blocks\.(\d+)\.ffn\.(0|2)", name)
    if m:
        b, what = m.groups()
        if what == "0":
            return AdaLN("time_projection.1", 3, 4, 6, extra_bias=f"blocks.{b}.modulation")
        return Act("gelu", f"blocks.{b}.ffn.0")
    table = {
        "time_embedding.0": Sinusoid(),
        "time_embedding.2": Act("silu", "time_embedding.0"),
        "time_projection.1": Vec("wan"),
        "text_embedding.0": External("text-encoder states"),
        "text_embedding.2": Act("gelu", "text_embedding.0"),
        "head.head": External("head input (AdaLN of head.modulation: not modelled)"),
    }
    return table.get(name)


VEC_TERMS = (("time", "time_embedding.0", "time_embedding.2"),)


FAMILY = Family(
    "wan", "dit",
    DetectionRule(("head.modulation",), "diffusers: wan", "patch_embedding.weight", ("blocks.",),
                  ("blocks.0.self_attn.q.weight", "blocks.0.cross_attn.q.weight")),
    variant,
    presets=PRESETS, edge_blocks=r"^blocks\.(\d+)\.",
    # image-to-video 2.1: the cross-attention reads the CLIP image tokens through k_img, v_img
    shared_inputs=(SharedInput(r"(^|.*\.)cross_attn$", ("k_img", "v_img")),),
    inventories=(("wan", wan_14b), ("wan22-5b", ti2v_5b), ("wan22-i2v-a14b", i2v_a14b)),
    graph=ProducerGraph(sources, VEC_TERMS))
