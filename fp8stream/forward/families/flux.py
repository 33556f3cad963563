"""Flux (BFL / ComfyUI names: double_blocks, single_blocks, img_in, txt_in, ...).

diffusers' FluxTransformer2DModel multiplies the timestep and guidance by 1000 inside: the
inputs carry t and g as they are. Its converter hard-codes Flux-dev's widths (inner_dim 3072,
mlp_ratio 4.0) to split `linear1`; `with_widths` runs it with the checkpoint's own widths.
"""

from __future__ import annotations

from typing import Mapping

import torch

from fp8stream.forward.families import bfl_sizes, joint_value_sources, with_constants
from fp8stream.forward.inputs import SamplePlan, image_ids, packed_latents

NAME = "flux"


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """(16, 56, 56) for Flux's head_dim 128; the same proportions, even sizes, otherwise."""
    a1 = ((head_dim - max(2, head_dim // 8)) // 2) & ~1
    return (head_dim - 2 * a1, a1, a1)


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    sizes = bfl_sizes(shapes)
    return sizes | {
        "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
        "axes_dims_rope": rope_axes(sizes["attention_head_dim"]),
    }


def model_class():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel


def with_widths(fn, state: dict, cfg: Mapping) -> dict:
    """Run a converter that hard-codes Flux-dev's widths (inner_dim 3072, mlp_ratio 4.0: Flux's,
    Chroma's) with this checkpoint's."""
    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    mlp = state["double_blocks.0.img_mlp.0.weight"].shape[0]
    return with_constants(fn, {3072: inner, 4.0: mlp / inner})(dict(state))


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers as fn

    return with_widths(fn, state, cfg)


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    hidden, t, h, w = packed_latents(cfg["in_channels"], plan)
    out = {
        "hidden_states": hidden,
        "encoder_hidden_states": plan.text(cfg["joint_attention_dim"]),
        "pooled_projections": plan.pooled(cfg["pooled_projection_dim"]),
        "timestep": t,  # diffusers multiplies by 1000 inside
        "img_ids": image_ids(h, w),
        "txt_ids": torch.zeros(plan.text_tokens, 3),
    }
    if cfg["guidance_embeds"]:
        out["guidance"] = plan.guidance()
    return out


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Attention output projections -> the Linears whose outputs (values) their input mixes:
    joint attention mixes both streams' values; a single block's proj_out reads the mix of its
    to_v beside GELU(proj_mlp) (already in its own observed input)."""
    out = joint_value_sources(cfg["num_layers"])
    for i in range(cfg["num_single_layers"]):
        b = f"single_transformer_blocks.{i}."
        out[b + "proj_out"] = [[b + "attn.to_v"]]
    return out
