"""Wan 2.x (original / ComfyUI names: blocks.N.self_attn.q, cross_attn, ffn.0, head.head, ...).

diffusers' WanTransformer3DModel takes the timestep in [0, 1000]. Wan's heads are 128 wide
(1.3B: 12, 14B: 40, 5B: 24); a width that is not a multiple of 128 (a small test model) gets
heads of SMALL_HEAD_DIM. The i2v image branch (img_emb, k_img/v_img) gets Gaussian image
features of CLIP's 257 tokens (FLF2V: its own emb_pos length).

Wan 2.2 maps as 2.1 does (same names, same class); its variants differ in their inputs:
- i2v-A14B (both experts): no image branch; the latent input concatenates the noisy latent,
  a 4-channel frame mask (1 on the given first frame) and the image's latent (in 36 = 16+4+16).
- TI2V-5B (Wan 2.2's VAE: 48 latent channels): the given first frame replaces the first latent
  frame, whose tokens get timestep 0: one timestep per token (diffusers takes [batch, tokens]).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from fp8stream.families.detect import count_blocks
from fp8stream.forward.inputs import SamplePlan, grid

NAME = "wan"
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
