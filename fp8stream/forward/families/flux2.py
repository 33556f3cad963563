"""Flux.2 dev and klein (BFL / ComfyUI names: double_blocks, single_blocks, img_in, txt_in,
double_stream_modulation_img/txt, single_stream_modulation, final_layer).

diffusers' Flux2Transformer2DModel multiplies the timestep and guidance by 1000 inside: the
inputs carry t and g as they are. Positions have four axes (time, row, column, text index):
image tokens (0, row, column, 0), text tokens (0, 0, 0, index), as its pipeline builds them.
Its converter splits the fused qkv in three equal chunks and keeps the single blocks' fused
`linear1` whole: no hard-coded width. klein has no guidance embedder (no `guidance_in`).
"""

from __future__ import annotations

from typing import Mapping

import torch

from fp8stream.forward.families import bfl_sizes, joint_value_sources
from fp8stream.forward.inputs import SamplePlan, image_ids, packed_latents

NAME = "flux2"


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    sizes = bfl_sizes(shapes)
    inner = sizes["num_attention_heads"] * sizes["attention_head_dim"]
    return sizes | {
        "timestep_guidance_channels": shapes["time_in.in_layer.weight"][1],
        # the MLP's gated input projection is 2 x hidden wide
        "mlp_ratio": shapes["double_blocks.0.img_mlp.0.weight"][0] / (2 * inner),
        "axes_dims_rope": (sizes["attention_head_dim"] // 4,) * 4,
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
    }


def model_class():
    from diffusers import Flux2Transformer2DModel

    return Flux2Transformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers as fn

    return fn(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    hidden, t, h, w = packed_latents(cfg["in_channels"], plan)
    img_ids = torch.cat([torch.zeros(h * w, 1), image_ids(h, w)[:, 1:], torch.zeros(h * w, 1)], dim=1)
    txt_ids = torch.zeros(plan.text_tokens, 4)
    txt_ids[:, 3] = torch.arange(plan.text_tokens)
    out = {
        "hidden_states": hidden,
        "encoder_hidden_states": plan.text(cfg["joint_attention_dim"]),
        "timestep": t,  # diffusers multiplies by 1000 inside
        "img_ids": img_ids,
        "txt_ids": txt_ids,
    }
    if cfg["guidance_embeds"]:
        out["guidance"] = plan.guidance()
    return out


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Joint attention mixes both streams' values; a single block's to_out reads the mix of the
    values of its fused to_qkv_mlp_proj (bounded by that whole output) beside the MLP."""
    out = joint_value_sources(cfg["num_layers"])
    for i in range(cfg["num_single_layers"]):
        a = f"single_transformer_blocks.{i}.attn."
        out[a + "to_out"] = [[a + "to_qkv_mlp_proj"]]
    return out
