"""Z-Image (original / ComfyUI names: x_embedder, final_layer, t_embedder.mlp, cap_embedder,
noise_refiner / context_refiner / layers.N with a fused attention.qkv and feed_forward.w1-3).

diffusers' ZImageTransformer2DModel takes a list of per-sample latents [C, frames, H, W] and of
caption features [tokens, width], and a time that runs the other way: 1 - sigma (its pipeline
passes (1000 - t) / 1000; the model multiplies by t_scale 1000). Patches are 2x2, one frame.
The converter splits qkv in three equal parts (as many key/value heads as query heads).
"""

from __future__ import annotations

from typing import Mapping

from fp8stream.families.detect import count_blocks
from fp8stream.forward.inputs import SamplePlan, grid

NAME = "z-image"
PATCH = 2


def rope_axes(head_dim: int) -> list[int]:
    """[32, 48, 48] for Z-Image's head_dim 128; the same proportions, even sizes, otherwise."""
    first = (head_dim // 4) & ~1
    rest = ((head_dim - first) // 2) & ~1
    return [head_dim - 2 * rest, rest, rest]


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    dim, patch_in = shapes["x_embedder.weight"]
    head_dim = shapes["layers.0.attention.q_norm.weight"][0]
    siglip = shapes.get("siglip_embedder.1.weight")
    return {
        "all_patch_size": (PATCH,),
        "all_f_patch_size": (1,),
        "in_channels": patch_in // (PATCH * PATCH),
        "dim": dim,
        "n_layers": count_blocks(shapes, "layers."),
        "n_refiner_layers": count_blocks(shapes, "noise_refiner."),
        "n_heads": dim // head_dim,
        "n_kv_heads": dim // head_dim,
        "cap_feat_dim": shapes["cap_embedder.1.weight"][1],
        "siglip_feat_dim": siglip[1] if siglip else None,
        "axes_dims": rope_axes(head_dim),
    }


def model_class():
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers as fn

    return fn(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    h, w = grid(plan.image_tokens)
    shape = (cfg["in_channels"], 1, h * PATCH, w * PATCH)
    x0, noise = plan.randn(*shape), plan.randn(*shape)
    t = plan.timesteps()
    return {
        "x": list(plan.noised(x0, noise, t).unbind(0)),
        "t": 1.0 - t,  # Z-Image's time runs from noise (0) to clean (1)
        "cap_feats": list(plan.text(cfg["cap_feat_dim"]).unbind(0)),
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Each block's attention output projection reads the mix of its own values."""
    blocks = [f"layers.{i}." for i in range(cfg["n_layers"])]
    blocks += [f"{part}.{i}." for part in ("noise_refiner", "context_refiner") for i in range(cfg["n_refiner_layers"])]
    return {b + "attention.to_out.0": [[b + "attention.to_v"]] for b in blocks}
