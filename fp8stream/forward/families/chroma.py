"""Chroma (BFL / ComfyUI names like Flux's, without the per-block modulation layers: one
`distilled_guidance_layer` approximator computes every block's modulation from the timestep).

diffusers' ChromaTransformer2DModel multiplies the timestep by 1000 inside; no guidance, no
pooled text. Its converter hard-codes Flux's widths (inner_dim 3072, mlp_ratio 4.0) to split
`linear1`: it runs with the checkpoint's own widths (flux.with_widths).
"""

from __future__ import annotations

from typing import Mapping

import torch

from fp8stream.families.detect import count_blocks
from fp8stream.forward.families import bfl_sizes
from fp8stream.forward.families.flux import rope_axes, value_sources as flux_value_sources, with_widths
from fp8stream.forward.inputs import SamplePlan, image_ids, packed_latents

NAME = "chroma"


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    sizes = bfl_sizes(shapes)
    hidden, channels = shapes["distilled_guidance_layer.in_proj.weight"]
    return sizes | {
        "axes_dims_rope": rope_axes(sizes["attention_head_dim"]),
        "approximator_num_channels": channels,
        "approximator_hidden_dim": hidden,
        "approximator_layers": count_blocks(shapes, "distilled_guidance_layer.layers."),
    }


def model_class():
    from diffusers import ChromaTransformer2DModel

    return ChromaTransformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_chroma_transformer_checkpoint_to_diffusers as fn

    return with_widths(fn, state, cfg)


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    hidden, t, h, w = packed_latents(cfg["in_channels"], plan)
    return {
        "hidden_states": hidden,
        "encoder_hidden_states": plan.text(cfg["joint_attention_dim"]),
        "timestep": t,  # diffusers multiplies by 1000 inside
        "img_ids": image_ids(h, w),
        "txt_ids": torch.zeros(plan.text_tokens, 3),
    }


# as Flux: joint attention mixes both streams' values; a single block's proj_out the mix of its to_v
value_sources = flux_value_sources
