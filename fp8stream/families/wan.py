"""Wan 2.1 / 2.2 (text-to-video, image-to-video, TI2V-5B, VACE)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Mapping

from fp8stream.families.family import DetectionRule, Family, ModelCode, SharedInput, count_blocks
from fp8stream.families.graph_types import Act, AdaLN, External, Norm, ProducerGraph, Sinusoid, Source, Vec
from fp8stream.families.spec import TensorSpec, linear as _linear

if TYPE_CHECKING:
    import torch

    from fp8stream.families.samples import SamplePlan


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


# The forward pass's model code (`--method forward`):
# Wan 2.x (original / ComfyUI names: blocks.N.self_attn.q, cross_attn, ffn.0, head.head, ...).
#
# diffusers' WanTransformer3DModel takes the timestep in [0, 1000]. Wan's heads are 128 wide
# (1.3B: 12, 14B: 40, 5B: 24); a width that is not a multiple of 128 (a small test model) gets
# heads of SMALL_HEAD_DIM. The i2v image branch (img_emb, k_img/v_img) gets Gaussian image
# features of CLIP's 257 tokens (FLF2V: its own emb_pos length).
#
# Wan 2.2 maps as 2.1 does (same names, same class); its variants differ in their inputs:
# - i2v-A14B (both experts): no image branch; the latent input concatenates the noisy latent,
#   a 4-channel frame mask (1 on the given first frame) and the image's latent (in 36 = 16+4+16).
# - TI2V-5B (Wan 2.2's VAE: 48 latent channels): the given first frame replaces the first latent
#   frame, whose tokens get timestep 0: one timestep per token (diffusers takes [batch, tokens]).


HEAD_DIM = 128


SMALL_HEAD_DIM = 16


IMAGE_TOKENS = 257


MASK_CHANNELS = 4  # i2v-A14B's frame mask, one channel per frame of the VAE's 4-frame group


WAN22_VAE_CHANNELS = 48  # TI2V-5B's latent: it conditions on the first frame per token


def head_dim(width: int) -> int:
    return HEAD_DIM if width % HEAD_DIM == 0 else SMALL_HEAD_DIM


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    inner, in_channels, *patch = shapes["patch_embedding.weight"]
    hd = head_dim(inner)
    has_image = "img_emb.proj.1.weight" in shapes
    emb_pos = shapes.get("img_emb.emb_pos")
    return {
        "patch_size": tuple(patch),
        "num_attention_heads": inner // hd,
        "attention_head_dim": hd,
        "in_channels": in_channels,
        "out_channels": shapes["head.head.weight"][0] // math.prod(patch),
        "text_dim": shapes["text_embedding.0.weight"][1],
        "freq_dim": shapes["time_embedding.0.weight"][1],
        "ffn_dim": shapes["blocks.0.ffn.0.weight"][0],
        "num_layers": count_blocks(shapes, "blocks."),
        "cross_attn_norm": "blocks.0.norm3.weight" in shapes,
        "qk_norm": "rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in shapes else None,
        "eps": 1e-6,
        "image_dim": shapes["img_emb.proj.1.weight"][1] if has_image else None,
        "added_kv_proj_dim": inner if "blocks.0.cross_attn.k_img.weight" in shapes else None,
        "pos_embed_seq_len": emb_pos[1] if emb_pos else None,
    }


def model_class():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers as fn

    return fn(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    import torch

    from fp8stream.families.samples import grid

    b = plan.size
    pt, ph, pw = cfg["patch_size"]
    out_ch, in_ch = cfg["out_channels"], cfg["in_channels"]
    per_token = in_ch == out_ch == WAN22_VAE_CHANNELS
    frames = 2 if plan.image_tokens >= 64 or per_token or in_ch != out_ch else 1
    h, w = grid(max(1, plan.image_tokens // frames))
    shape = (b, out_ch, frames * pt, h * ph, w * pw)
    x0, noise = plan.randn(*shape[1:]), plan.randn(*shape[1:])
    t = plan.timesteps()
    latent = plan.noised(x0, noise, t)
    timestep = t * 1000.0  # diffusers' Wan takes 0-1000
    if per_token:  # TI2V: the first latent frame is the given image, at timestep 0
        latent[:, :, :pt] = x0[:, :, :pt]
        first = torch.zeros(frames, h, w, dtype=torch.bool)
        first[0] = True
        timestep = torch.where(first.flatten()[None, :], 0.0, timestep[:, None])
    if in_ch != out_ch:
        latent = torch.cat([latent, _condition(shape, in_ch - out_ch, plan)], dim=1)
    out = {
        "hidden_states": latent,
        "encoder_hidden_states": plan.text(cfg["text_dim"]),
        "timestep": timestep,
    }
    if cfg["image_dim"]:
        tokens = cfg["pos_embed_seq_len"] or IMAGE_TOKENS
        out["encoder_hidden_states_image"] = plan.text(cfg["image_dim"], tokens)
    return out


def _condition(shape: tuple[int, ...], channels: int, plan: SamplePlan) -> torch.Tensor:
    """The channels concatenated to the latent: i2v's frame mask (1 on the first frame) and the
    conditioning latent (Gaussian: a VAE latent is normalised to unit scale); other layouts, Gaussian."""
    import torch

    b, _, f, h, w = shape
    if channels <= MASK_CHANNELS:
        return plan.randn(channels, f, h, w)
    mask = torch.zeros((b, MASK_CHANNELS, f, h, w))
    mask[:, :, 0] = 1.0
    return torch.cat([mask, plan.randn(channels - MASK_CHANNELS, f, h, w)], dim=1)


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Attention output projections -> the Linears whose outputs their input mixes; i2v's
    cross-attention adds the image attention's mix to the text one (a sum: two groups)."""
    out = {}
    for i in range(cfg["num_layers"]):
        b = f"blocks.{i}."
        out[b + "attn1.to_out.0"] = [[b + "attn1.to_v"]]
        out[b + "attn2.to_out.0"] = ([[b + "attn2.to_v"]]
                                     + ([[b + "attn2.add_v_proj"]] if cfg["added_kv_proj_dim"] else []))
    return out


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("blocks.{}.attn1.to_k", "blocks.{}.self_attn.k"),
    ("blocks.{}.attn1.to_out.0", "blocks.{}.self_attn.o"),
    ("blocks.{}.attn1.to_q", "blocks.{}.self_attn.q"),
    ("blocks.{}.attn1.to_v", "blocks.{}.self_attn.v"),
    ("blocks.{}.attn2.to_k", "blocks.{}.cross_attn.k"),
    ("blocks.{}.attn2.to_out.0", "blocks.{}.cross_attn.o"),
    ("blocks.{}.attn2.to_q", "blocks.{}.cross_attn.q"),
    ("blocks.{}.attn2.to_v", "blocks.{}.cross_attn.v"),
    ("blocks.{}.ffn.net.0.proj", "blocks.{}.ffn.0"),
    ("blocks.{}.ffn.net.2", "blocks.{}.ffn.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("proj_out", "head.head"),
)
# end of derived renames


FAMILY = Family(
    "wan", "dit",
    DetectionRule(("head.modulation",), "diffusers: wan", "patch_embedding.weight", ("blocks.",),
                  ("blocks.0.self_attn.q.weight", "blocks.0.cross_attn.q.weight")),
    variant,
    presets=PRESETS, edge_blocks=r"^blocks\.(\d+)\.",
    # image-to-video 2.1: the cross-attention reads the CLIP image tokens through k_img, v_img
    shared_inputs=(SharedInput(r"(^|.*\.)cross_attn$", ("k_img", "v_img")),),
    inventories=(("wan", wan_14b), ("wan22-5b", ti2v_5b), ("wan22-i2v-a14b", i2v_a14b)),
    graph=ProducerGraph(sources, VEC_TERMS),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
