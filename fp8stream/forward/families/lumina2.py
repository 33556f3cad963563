"""Lumina 2 (original / ComfyUI names: x_embedder, t_embedder.mlp, cap_embedder, noise_refiner /
context_refiner / layers.N with a fused attention.qkv of grouped key/value heads, feed_forward.w1-3,
final_layer).

diffusers' Lumina2Transformer2DModel takes latents [B, C, H, W], a caption mask, and a time that
runs the other way: 1 - sigma (its pipeline reverses it). The converter hard-codes Lumina-Image-2's
qkv split (2304 query rows, 768 key and value rows): it runs with the file's own sizes. The MLP
width is matched exactly through `multiple_of` (diffusers rounds 4 x width up to a multiple).
"""

from __future__ import annotations

from typing import Mapping

import torch

from fp8stream.families.detect import count_blocks
from fp8stream.forward.families import with_constants
from fp8stream.forward.inputs import SamplePlan, grid

NAME = "lumina2"
PATCH = 2


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """(32, 32, 32) for Lumina 2's head_dim 96; even thirds otherwise."""
    third = (head_dim // 3) & ~1
    return (head_dim - 2 * third, third, third)


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    dim, patch_in = shapes["x_embedder.weight"]
    head_dim = shapes["layers.0.attention.q_norm.weight"][0]
    kv_heads = (shapes["layers.0.attention.qkv.weight"][0] - dim) // (2 * head_dim)
    ffn = shapes["layers.0.feed_forward.w1.weight"][0]
    return {
        "patch_size": PATCH,
        "in_channels": patch_in // (PATCH * PATCH),
        "out_channels": shapes["final_layer.linear.weight"][0] // (PATCH * PATCH),
        "hidden_size": dim,
        "num_layers": count_blocks(shapes, "layers."),
        "num_refiner_layers": count_blocks(shapes, "noise_refiner."),
        "num_attention_heads": dim // head_dim,
        "num_kv_heads": kv_heads,
        # diffusers: int(multiplier x 4 x dim) rounded up to a multiple of `multiple_of` = ffn
        "multiple_of": ffn,
        "ffn_dim_multiplier": ffn / (4 * dim),
        "axes_dim_rope": rope_axes(head_dim),
        "cap_feat_dim": shapes["cap_embedder.1.weight"][1],
    }


def model_class():
    from diffusers import Lumina2Transformer2DModel

    return Lumina2Transformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_lumina2_to_diffusers as fn

    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    return with_constants(fn, {2304: cfg["hidden_size"], 768: cfg["num_kv_heads"] * head_dim})(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    h, w = grid(plan.image_tokens)
    shape = (cfg["in_channels"], h * PATCH, w * PATCH)
    x0, noise = plan.randn(*shape), plan.randn(*shape)
    t = plan.timesteps()
    return {
        "hidden_states": plan.noised(x0, noise, t),
        "timestep": 1.0 - t,  # Lumina's time runs from noise (0) to clean (1)
        "encoder_hidden_states": plan.text(cfg["cap_feat_dim"]),
        "encoder_attention_mask": torch.ones(plan.size, plan.text_tokens, dtype=torch.bool),
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Each block's attention output projection reads the mix of its own values."""
    blocks = [f"layers.{i}." for i in range(cfg["num_layers"])]
    blocks += [f"{part}.{i}." for part in ("noise_refiner", "context_refiner")
               for i in range(cfg["num_refiner_layers"])]
    return {b + "attn.to_out.0": [[b + "attn.to_v"]] for b in blocks}
