"""Flux (BFL / ComfyUI names: double_blocks, single_blocks, img_in, txt_in, ...).

diffusers' FluxTransformer2DModel multiplies the timestep and guidance by 1000 inside: the
inputs carry t and g as they are. Its converter hard-codes Flux-dev's widths (inner_dim 3072,
mlp_ratio 4.0) to split `linear1`; `with_widths` runs it with the checkpoint's own widths.
"""

from __future__ import annotations

from typing import Mapping

import torch

from fp8stream.formats.architecture import count_blocks
from fp8stream.forward.families import with_constants
from fp8stream.forward.inputs import SamplePlan, grid, image_ids

NAME = "flux"



def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """(16, 56, 56) for Flux's head_dim 128; the same proportions, even sizes, otherwise."""
    a1 = ((head_dim - max(2, head_dim // 8)) // 2) & ~1
    return (head_dim - 2 * a1, a1, a1)


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    inner, in_channels = shapes["img_in.weight"]
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    return {
        "patch_size": 1,
        "in_channels": in_channels,
        "out_channels": shapes["final_layer.linear.weight"][0],
        "num_layers": count_blocks(shapes, "double_blocks."),
        "num_single_layers": count_blocks(shapes, "single_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
        "axes_dims_rope": rope_axes(head_dim),
    }


def model_class():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel


def with_widths(fn, inner: int, ratio: float):
    """The converter with Flux-dev's hard-coded widths replaced by this checkpoint's."""
    return with_constants(fn, {3072: inner, 4.0: ratio})


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers as fn

    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    mlp = state["double_blocks.0.img_mlp.0.weight"].shape[0]
    return with_widths(fn, inner, mlp / inner)(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    b, g = plan.batch, plan.generator
    h, w = grid(plan.image_tokens)
    x0 = torch.randn(b, h * w, cfg["in_channels"], generator=g)
    noise = torch.randn(b, h * w, cfg["in_channels"], generator=g)
    t = plan.timesteps()
    out = {
        "hidden_states": plan.noised(x0, noise, t),
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
    out = {}
    for i in range(cfg["num_layers"]):
        a = f"transformer_blocks.{i}.attn."
        for proj in ("to_out.0", "to_add_out"):
            out[a + proj] = [[a + "to_v", a + "add_v_proj"]]
    for i in range(cfg["num_single_layers"]):
        b = f"single_transformer_blocks.{i}."
        out[b + "proj_out"] = [[b + "attn.to_v"]]
    return out
