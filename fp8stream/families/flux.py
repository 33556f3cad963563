"""FLUX.1 (dev, schnell, fill, depth): BFL's double/single-stream DiT."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import bfl_sizes, joint_value_sources, with_constants
from fp8stream.families.family import DetectionRule, Family, ModelCode
from fp8stream.families.graph_types import (
    Act,
    AdaLN,
    Concat,
    External,
    ProducerGraph,
    Sinusoid,
    Source,
    Vec,
    dit_stream,
)
from fp8stream.families.spec import TensorSpec, linear

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan


def variant(bare, width, blocks) -> str:
    """Schnell has no guidance embedder; fill and depth widen the image input (384, 128 channels)."""
    if "guidance_in.in_layer.weight" not in bare and "guidance_in.in_layer" not in bare:
        return "flux-schnell" if bare.get("img_in.weight") else "flux"
    channels = (bare.get("img_in.weight") or (0, 0))[1]
    return {384: "flux-fill", 128: "flux-depth"}.get(channels, "flux-dev")


# `--preset flux`: the embedders and the final projection (BFL's names, then diffusers')
PRESETS = (
    ("img_in", "embedder"), ("txt_in", "embedder"), ("time_in.*", "embedder"), ("vector_in.*", "embedder"),
    ("guidance_in.*", "embedder"), ("final_layer.*", "final projection"),
    # diffusers spelling
    ("x_embedder", "embedder"), ("context_embedder", "embedder"), ("time_text_embed.*", "embedder"),
    ("norm_out.*", "final projection"), ("proj_out", "final projection"),
)


# Flux.1-dev at real size (names and shapes as ComfyUI loads them), for scripts/bench.py --arch.


def flux_dev(blocks: int | None = None) -> list[TensorSpec]:
    """Flux.1-dev: hidden 3072, MLP 12288, 19 double and 38 single blocks (12B parameters)."""
    d, mlp = 3072, 12288
    double = 19 if blocks is None else blocks
    single = 38 if blocks is None else 2 * blocks
    specs: list[TensorSpec] = []
    specs += linear("img_in", d, 64, False) + linear("txt_in", d, 4096, False)
    for emb, in_f in (("time_in", 256), ("guidance_in", 256), ("vector_in", 768)):
        specs += linear(f"{emb}.in_layer", d, in_f, False) + linear(f"{emb}.out_layer", d, d, False)
    for i in range(double):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            specs += linear(f"{p}_mod.lin", 6 * d, d, True)
            specs += linear(f"{p}_attn.qkv", 3 * d, d, True) + linear(f"{p}_attn.proj", d, d, True)
            specs += [TensorSpec(f"{p}_attn.norm.query_norm.scale", (128,), False),
                      TensorSpec(f"{p}_attn.norm.key_norm.scale", (128,), False)]
            specs += linear(f"{p}_mlp.0", mlp, d, True) + linear(f"{p}_mlp.2", d, mlp, True)
    for i in range(single):
        p = f"single_blocks.{i}"
        specs += linear(f"{p}.linear1", 3 * d + mlp, d, True) + linear(f"{p}.linear2", d, d + mlp, True)
        specs += linear(f"{p}.modulation.lin", 3 * d, d, True)
        specs += [TensorSpec(f"{p}.norm.query_norm.scale", (128,), False),
                  TensorSpec(f"{p}.norm.key_norm.scale", (128,), False)]
    specs += linear("final_layer.adaLN_modulation.1", 2 * d, d, False) + linear("final_layer.linear", 64, d, False)
    return specs


# The producer graph of the bound (`--method simulate`): where each linear's input comes from.
# Flux (BFL):  double_blocks.N.{img,txt}_mod.lin ............ SiLU(vec)
#              double_blocks.N.{img,txt}_attn.qkv, _mlp.0 .... LN(h)·(1+scale)+shift, chunks of *_mod.lin
#                                                              (shift, scale, gate) x2: attn 0/1, mlp 3/4
#              double_blocks.N.{img,txt}_attn.proj ........... attention mix of the v rows of *_attn.qkv
#              double_blocks.N.{img,txt}_mlp.2 ............... GELU(*_mlp.0)
#              single_blocks.N.modulation.lin ................ SiLU(vec)
#              single_blocks.N.linear1 ....................... LN(h)·(1+scale)+shift, chunks 0/1 of modulation.lin
#              single_blocks.N.linear2 ....................... cat(attention mix of v rows [2d,3d) of linear1,
#                                                                  GELU(mlp rows [3d, out) of linear1))
#              final_layer.adaLN_modulation.1 ................ SiLU(vec)
#              final_layer.linear ............................ LN(h)·(1+scale)+shift, chunks (0 shift, 1 scale)
#              time_in / guidance_in .in_layer ............... sinusoidal embedding, |x| <= 1
#              time_in / guidance_in / vector_in .out_layer .. SiLU(in_layer)
#              vector_in.in_layer, img_in, txt_in ............ model inputs (pooled text, latents, T5 states)
#              vec = time_in(t) + guidance_in(g) + vector_in(pooled)


def sources(name: str, has: set[str]) -> Source | None:
    if m := re.fullmatch(r"(double_blocks\.\d+\.(?:img|txt)_)(mod\.lin|attn\.qkv|attn\.proj|mlp\.0|mlp\.2)", name):
        return dit_stream("flux", m.group(1), m.group(2), ("mod.lin", "attn.qkv", "mlp.0"), 6)
    m = re.fullmatch(r"single_blocks\.(\d+)\.(modulation\.lin|linear1|linear2)", name)
    if m:
        b, what = m.groups()
        p = f"single_blocks.{b}."
        if what == "modulation.lin":
            return Vec("flux")
        if what == "linear1":
            return AdaLN(p + "modulation.lin", 0, 1, 3)
        return Concat((Act("attn", p + "linear1", "qkv_v"), Act("gelu", p + "linear1", "mlp")))
    table = {
        "final_layer.adaLN_modulation.1": Vec("flux"),
        "final_layer.linear": AdaLN("final_layer.adaLN_modulation.1", 0, 1, 2),
        "time_in.in_layer": Sinusoid(),
        "guidance_in.in_layer": Sinusoid(),
        "time_in.out_layer": Act("silu", "time_in.in_layer"),
        "guidance_in.out_layer": Act("silu", "guidance_in.in_layer"),
        "vector_in.out_layer": Act("silu", "vector_in.in_layer"),
        "vector_in.in_layer": External("pooled text embedding"),
        "img_in": External("image latents"),
        "txt_in": External("text-encoder states"),
    }
    return table.get(name)


VEC_TERMS = (("time", "time_in.in_layer", "time_in.out_layer"),
             ("guidance", "guidance_in.in_layer", "guidance_in.out_layer"),
             ("pooled", "vector_in.in_layer", "vector_in.out_layer"))


# The forward pass's model code (`--method forward`):
# Flux (BFL / ComfyUI names: double_blocks, single_blocks, img_in, txt_in, ...).
#
# diffusers' FluxTransformer2DModel multiplies the timestep and guidance by 1000 inside: the
# inputs carry t and g as they are. Its converter hard-codes Flux-dev's widths (inner_dim 3072,
# mlp_ratio 4.0) to split `linear1`; `with_widths` runs it with the checkpoint's own widths.


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
    import torch

    from fp8stream.families.samples import image_ids, packed_latents

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


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("context_embedder", "txt_in"),
    ("norm_out.linear", "final_layer.adaLN_modulation.1"),
    ("proj_out", "final_layer.linear"),
    ("single_transformer_blocks.{}.attn.to_k", "single_blocks.{}.linear1"),
    ("single_transformer_blocks.{}.attn.to_q", "single_blocks.{}.linear1"),
    ("single_transformer_blocks.{}.attn.to_v", "single_blocks.{}.linear1"),
    ("single_transformer_blocks.{}.norm.linear", "single_blocks.{}.modulation.lin"),
    ("single_transformer_blocks.{}.proj_mlp", "single_blocks.{}.linear1"),
    ("single_transformer_blocks.{}.proj_out", "single_blocks.{}.linear2"),
    ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
    ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
    ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
    ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
    ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
    ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
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
    ("transformer_blocks.{}.norm1.linear", "double_blocks.{}.img_mod.lin"),
    ("transformer_blocks.{}.norm1_context.linear", "double_blocks.{}.txt_mod.lin"),
    ("x_embedder", "img_in"),
)
# end of derived renames


FAMILY = Family(
    "flux", "dit",
    DetectionRule(("double_blocks.0.img_attn.norm.key_norm.scale",), "diffusers: flux", "img_in.weight",
                  ("double_blocks.", "single_blocks."),
                  ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"),
                  ("double_blocks.", "single_blocks.")),
    variant,
    presets=PRESETS,
    inventories=(("flux", flux_dev),),
    graph=ProducerGraph(sources, VEC_TERMS),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
