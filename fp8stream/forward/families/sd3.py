"""SD3 / SD3.5 MMDiT (original / ComfyUI names: joint_blocks, x_embedder, context_embedder, ...).

diffusers' SD3Transformer2DModel takes the timestep in [0, 1000]. Heads: SD3 uses head_dim 64;
the q/k norm's width says it when the checkpoint has one (SD3.5).
"""

from __future__ import annotations

import math
from typing import Mapping

from fp8stream.families.detect import count_blocks
from fp8stream.forward.families import joint_value_sources
from fp8stream.forward.inputs import SamplePlan, grid

NAME = "sd3"
HEAD_DIM = 64



def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    inner, in_channels, patch, _ = shapes["x_embedder.proj.weight"]
    ln_q = shapes.get("joint_blocks.0.x_block.attn.ln_q.weight")
    head_dim = ln_q[0] if ln_q else HEAD_DIM
    layers = count_blocks(shapes, "joint_blocks.")
    return {
        "sample_size": 128,
        "patch_size": patch,
        "in_channels": in_channels,
        "num_layers": layers,
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "joint_attention_dim": shapes["context_embedder.weight"][1],
        "caption_projection_dim": shapes["context_embedder.weight"][0],
        "pooled_projection_dim": shapes["y_embedder.mlp.0.weight"][1],
        "out_channels": shapes["final_layer.linear.weight"][0] // (patch * patch),
        "pos_embed_max_size": math.isqrt(shapes["pos_embed"][1]),
        "dual_attention_layers": tuple(i for i in range(layers)
                                       if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in shapes),
        "qk_norm": "rms_norm" if ln_q else None,
    }


def model_class():
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers as fn

    return fn(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    p = cfg["patch_size"]
    h, w = grid(plan.image_tokens)
    h, w = min(h, cfg["pos_embed_max_size"]), min(w, cfg["pos_embed_max_size"])
    shape = (cfg["in_channels"], h * p, w * p)
    x0, noise = plan.randn(*shape), plan.randn(*shape)
    t = plan.timesteps()
    return {
        "hidden_states": plan.noised(x0, noise, t),
        "encoder_hidden_states": plan.text(cfg["joint_attention_dim"]),
        "pooled_projections": plan.pooled(cfg["pooled_projection_dim"]),
        "timestep": t * 1000.0,  # diffusers' SD3 takes 0-1000
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Attention output projections -> the Linears whose outputs their input mixes (joint
    attention: both streams' values; SD3.5's second attention: the image stream's)."""
    out = joint_value_sources(cfg["num_layers"])
    for i in cfg["dual_attention_layers"]:
        a2 = f"transformer_blocks.{i}.attn2."
        out[a2 + "to_out.0"] = [[a2 + "to_v"]]
    return out
