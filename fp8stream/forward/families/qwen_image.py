"""Qwen-Image and its edit models. ComfyUI's files use diffusers' own names (transformer_blocks.N
.img_mod.1, attn.to_q, img_mlp.net.0.proj, txt_norm, norm_out.linear, proj_out): the mapping is
the identity, checked against the model like every other.

diffusers' QwenImageTransformer2DModel takes the timestep in [0, 1] (its pipeline divides by
1000, its embedder multiplies by 1000) and the image grid per sample (`img_shapes`: frames, rows,
columns of packed 2x2 latent patches). Patches are 2x2 (64 input channels = 16 x 4).
"""

from __future__ import annotations

from typing import Mapping

import torch

from fp8stream.families.detect import count_blocks
from fp8stream.forward.families import joint_value_sources
from fp8stream.forward.families.flux import rope_axes
from fp8stream.forward.inputs import SamplePlan, packed_latents

NAME = "qwen-image"
PATCH = 2


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    inner, in_channels = shapes["img_in.weight"]
    head_dim = shapes["transformer_blocks.0.attn.norm_q.weight"][0]
    return {
        "patch_size": PATCH,
        "in_channels": in_channels,
        "out_channels": shapes["proj_out.weight"][0] // (PATCH * PATCH),
        "num_layers": count_blocks(shapes, "transformer_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "axes_dims_rope": rope_axes(head_dim),
        "use_additional_t_cond": "time_text_embed.addition_t_embedding.weight" in shapes,
    }


def model_class():
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    return dict(state)  # the files use diffusers' names


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    b = plan.size
    hidden, t, h, w = packed_latents(cfg["in_channels"], plan)
    out = {
        "hidden_states": hidden,
        "encoder_hidden_states": plan.text(cfg["joint_attention_dim"]),
        "encoder_hidden_states_mask": torch.ones(b, plan.text_tokens, dtype=torch.long),
        "timestep": t,  # [0, 1]: the embedder multiplies by 1000
        "img_shapes": [[(1, h, w)]] * b,
    }
    if cfg["use_additional_t_cond"]:
        out["additional_t_cond"] = torch.zeros(b, dtype=torch.long)
    return out


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Joint attention: both output projections read the mix of both streams' values."""
    return joint_value_sources(cfg["num_layers"])
