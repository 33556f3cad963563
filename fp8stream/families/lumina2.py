"""Lumina Image 2.0 (NextDiT)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import with_constants
from fp8stream.families.family import DetectionRule, Family, ModelCode, SharedInput, count_blocks
from fp8stream.families.next_dit import PRESETS, next_dit_block, next_dit_inventory, next_dit_value_sources
from fp8stream.families.spec import TensorSpec

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan



# For scripts/bench.py --arch (`families.inventory`):
# Lumina-Image 2.0 at real size (original / ComfyUI names): dim 2304, 24 query heads of 96
# and 8 key/value heads (fused qkv of 3840 rows), 26 layers plus 2 noise and 2 context refiner
# blocks, gated FFN 9216, Gemma-2 caption states of 2304, 2x2 patches of 16 channels (2.6B
# parameters). Block linears in FP8.


def _block(p: str, d: int, modulated: bool) -> list[TensorSpec]:
    return next_dit_block(p, d, d + 2 * 768, 9216, 96, (4 * d, 1024) if modulated else None)


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    return next_dit_inventory(2304, 26 if blocks is None else blocks, 2304, 1024, _block)


# The forward pass's model code (`--method forward`):
# Lumina 2 (original / ComfyUI names: x_embedder, t_embedder.mlp, cap_embedder, noise_refiner /
# context_refiner / layers.N with a fused attention.qkv of grouped key/value heads, feed_forward.w1-3,
# final_layer).
#
# diffusers' Lumina2Transformer2DModel takes latents [B, C, H, W], a caption mask, and a time that
# runs the other way: 1 - sigma (its pipeline reverses it). The converter hard-codes Lumina-Image-2's
# qkv split (2304 query rows, 768 key and value rows): it runs with the file's own sizes. The MLP
# width is matched exactly through `multiple_of` (diffusers rounds 4 x width up to a multiple).


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
    import torch

    from fp8stream.families.samples import grid, noised_latents

    h, w = grid(plan.image_tokens)
    shape = (cfg["in_channels"], h * PATCH, w * PATCH)
    latents, t = noised_latents(plan, *shape)
    return {
        "hidden_states": latents,
        "timestep": 1.0 - t,  # Lumina's time runs from noise (0) to clean (1)
        "encoder_hidden_states": plan.text(cfg["cap_feat_dim"]),
        "encoder_attention_mask": torch.ones(plan.size, plan.text_tokens, dtype=torch.bool),
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    return next_dit_value_sources(cfg["num_layers"], cfg["num_refiner_layers"], "attn")


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("context_refiner.{}.attn.to_k", "context_refiner.{}.attention.qkv"),
    ("context_refiner.{}.attn.to_out.0", "context_refiner.{}.attention.out"),
    ("context_refiner.{}.attn.to_q", "context_refiner.{}.attention.qkv"),
    ("context_refiner.{}.attn.to_v", "context_refiner.{}.attention.qkv"),
    ("context_refiner.{}.feed_forward.linear_1", "context_refiner.{}.feed_forward.w1"),
    ("context_refiner.{}.feed_forward.linear_2", "context_refiner.{}.feed_forward.w2"),
    ("context_refiner.{}.feed_forward.linear_3", "context_refiner.{}.feed_forward.w3"),
    ("layers.{}.attn.to_k", "layers.{}.attention.qkv"),
    ("layers.{}.attn.to_out.0", "layers.{}.attention.out"),
    ("layers.{}.attn.to_q", "layers.{}.attention.qkv"),
    ("layers.{}.attn.to_v", "layers.{}.attention.qkv"),
    ("layers.{}.feed_forward.linear_1", "layers.{}.feed_forward.w1"),
    ("layers.{}.feed_forward.linear_2", "layers.{}.feed_forward.w2"),
    ("layers.{}.feed_forward.linear_3", "layers.{}.feed_forward.w3"),
    ("layers.{}.norm1.linear", "layers.{}.adaLN_modulation.1"),
    ("noise_refiner.{}.attn.to_k", "noise_refiner.{}.attention.qkv"),
    ("noise_refiner.{}.attn.to_out.0", "noise_refiner.{}.attention.out"),
    ("noise_refiner.{}.attn.to_q", "noise_refiner.{}.attention.qkv"),
    ("noise_refiner.{}.attn.to_v", "noise_refiner.{}.attention.qkv"),
    ("noise_refiner.{}.feed_forward.linear_1", "noise_refiner.{}.feed_forward.w1"),
    ("noise_refiner.{}.feed_forward.linear_2", "noise_refiner.{}.feed_forward.w2"),
    ("noise_refiner.{}.feed_forward.linear_3", "noise_refiner.{}.feed_forward.w3"),
    ("noise_refiner.{}.norm1.linear", "noise_refiner.{}.adaLN_modulation.1"),
    ("norm_out.linear_1", "final_layer.adaLN_modulation.1"),
    ("norm_out.linear_2", "final_layer.linear"),
    ("time_caption_embed.caption_embedder.1", "cap_embedder.1"),
    ("time_caption_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
    ("time_caption_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
    ("x_embedder", "x_embedder"),
)
# end of derived renames


FAMILY = Family(
    "lumina2", "dit",
    DetectionRule(("cap_embedder.0.weight",), "diffusers: lumina2", "x_embedder.weight", ("layers.",),
                  ("layers.0.adaLN_modulation.1.weight",)),
    presets=PRESETS,
    shared_inputs=(SharedInput(r"(^|.*\.)feed_forward$", ("w1", "w3")),),  # gated FFN: gate, up
    inventories=(("lumina2", inventory),),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
