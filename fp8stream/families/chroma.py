"""Chroma: Flux's blocks with a distilled guidance layer instead of per-block modulation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import bfl_sizes
from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks
from fp8stream.families.flux import rope_axes, value_sources as flux_value_sources, with_widths
from fp8stream.families.spec import TensorSpec, linear, norms

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

PRESETS = (
    ("img_in", "embedder"), ("txt_in", "embedder"),
    ("distilled_guidance_layer.*", "embedder (modulation approximator)"),
    ("final_layer.*", "final projection"),
)

# it carries Flux's double_blocks: tried before Flux


# For scripts/bench.py --arch (`families.inventory`):
# Chroma at real size (BFL / ComfyUI names): Flux-schnell's blocks (hidden 3072, MLP 12288, 19
# double and 38 single) without per-block modulation layers, and the 5-layer modulation
# approximator (`distilled_guidance_layer`, 5120 wide) that replaces them (8.9B parameters).
# Block linears in FP8, the approximator and embedders in BF16.


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d, mlp, head, hidden = 3072, 12288, 128, 5120
    double = 19 if blocks is None else blocks
    single = 38 if blocks is None else 2 * blocks
    specs = linear("img_in", d, 64, False) + linear("txt_in", d, 4096, False)
    g = "distilled_guidance_layer"
    specs += linear(f"{g}.in_proj", hidden, 64, False)
    for i in range(5):
        specs += linear(f"{g}.layers.{i}.in_layer", hidden, hidden, False)
        specs += linear(f"{g}.layers.{i}.out_layer", hidden, hidden, False)
        specs += norms(f"{g}.norms.{i}.scale", width=hidden)
    specs += linear(f"{g}.out_proj", d, hidden, False)
    for i in range(double):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            specs += linear(f"{p}_attn.qkv", 3 * d, d, True) + linear(f"{p}_attn.proj", d, d, True)
            specs += norms(f"{p}_attn.norm.query_norm.scale", f"{p}_attn.norm.key_norm.scale", width=head)
            specs += linear(f"{p}_mlp.0", mlp, d, True) + linear(f"{p}_mlp.2", d, mlp, True)
    for i in range(single):
        p = f"single_blocks.{i}"
        specs += linear(f"{p}.linear1", 3 * d + mlp, d, True) + linear(f"{p}.linear2", d, d + mlp, True)
        specs += norms(f"{p}.norm.query_norm.scale", f"{p}.norm.key_norm.scale", width=head)
    return specs + linear("final_layer.linear", 64, d, False)


# The forward pass's model code (`--method forward`):
# Chroma (BFL / ComfyUI names like Flux's, without the per-block modulation layers: one
# `distilled_guidance_layer` approximator computes every block's modulation from the timestep).
#
# diffusers' ChromaTransformer2DModel multiplies the timestep by 1000 inside; no guidance, no
# pooled text. Its converter hard-codes Flux's widths (inner_dim 3072, mlp_ratio 4.0) to split
# `linear1`: it runs with the checkpoint's own widths (flux.with_widths).


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
    import torch

    from fp8stream.families.samples import image_ids, packed_latents

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


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("context_embedder", "txt_in"),
    ("distilled_guidance_layer.in_proj", "distilled_guidance_layer.in_proj"),
    ("distilled_guidance_layer.layers.{}.linear_1", "distilled_guidance_layer.layers.{}.in_layer"),
    ("distilled_guidance_layer.layers.{}.linear_2", "distilled_guidance_layer.layers.{}.out_layer"),
    ("distilled_guidance_layer.out_proj", "distilled_guidance_layer.out_proj"),
    ("proj_out", "final_layer.linear"),
    ("single_transformer_blocks.{}.attn.to_k", "single_blocks.{}.linear1"),
    ("single_transformer_blocks.{}.attn.to_q", "single_blocks.{}.linear1"),
    ("single_transformer_blocks.{}.attn.to_v", "single_blocks.{}.linear1"),
    ("single_transformer_blocks.{}.proj_mlp", "single_blocks.{}.linear1"),
    ("single_transformer_blocks.{}.proj_out", "single_blocks.{}.linear2"),
    ("transformer_blocks.{}.attn.add_k_proj", "double_blocks.{}.txt_attn.qkv"),
    ("transformer_blocks.{}.attn.add_q_proj", "double_blocks.{}.txt_attn.qkv"),
    ("transformer_blocks.{}.attn.add_v_proj", "double_blocks.{}.txt_attn.qkv"),
    ("transformer_blocks.{}.attn.to_add_out", "double_blocks.{}.txt_attn.proj"),
    ("transformer_blocks.{}.attn.to_k", "double_blocks.{}.img_attn.qkv"),
    ("transformer_blocks.{}.attn.to_out.0", "double_blocks.{}.img_attn.proj"),
    ("transformer_blocks.{}.attn.to_q", "double_blocks.{}.img_attn.qkv"),
    ("transformer_blocks.{}.attn.to_v", "double_blocks.{}.img_attn.qkv"),
    ("transformer_blocks.{}.ff.net.0.proj", "double_blocks.{}.img_mlp.0"),
    ("transformer_blocks.{}.ff.net.2", "double_blocks.{}.img_mlp.2"),
    ("transformer_blocks.{}.ff_context.net.0.proj", "double_blocks.{}.txt_mlp.0"),
    ("transformer_blocks.{}.ff_context.net.2", "double_blocks.{}.txt_mlp.2"),
    ("x_embedder", "img_in"),
)
# end of derived renames


FAMILY = Family(
    "chroma", "dit",
    DetectionRule(("distilled_guidance_layer.in_proj.bias",), "diffusers: chroma", "img_in.weight",
                  ("double_blocks.", "single_blocks."), ("distilled_guidance_layer.in_proj.weight",)),
    presets=PRESETS,
    inventories=(("chroma", inventory),),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
