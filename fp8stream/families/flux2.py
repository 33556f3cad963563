"""FLUX.2 (dev and klein): Flux's double/single blocks with shared modulations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import bfl_sizes, joint_value_sources
from fp8stream.families.family import DetectionRule, Family, ModelCode
from fp8stream.families.spec import TensorSpec, linear, norms

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

# dev is 6144 wide (8+48 blocks); klein 4B 3072 (5+20), klein 9B 4096 (8+24)
WIDTHS = {6144: "flux2-dev", 3072: "flux2-klein-4b", 4096: "flux2-klein-9b"}


def variant(bare, width, blocks) -> str:
    return WIDTHS.get(width, "flux2")


PRESETS = (
    ("img_in", "embedder"), ("txt_in", "embedder"), ("time_in.*", "embedder"), ("guidance_in.*", "embedder"),
    ("final_layer.*", "final projection"),
)

# it carries Flux's double_blocks: tried before Flux


# For scripts/bench.py --arch (`families.inventory`):
# Flux.2-dev at real size (BFL / ComfyUI names): hidden 6144 (48 heads of 128), gated MLP
# 18432, 8 double and 48 single blocks, 128 latent channels, Mistral text states of 15360 (32B
# parameters). Block linears and the shared stream modulations in FP8, no biases.


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d, mlp, head = 6144, 18432, 128
    double = 8 if blocks is None else blocks
    single = 48 if blocks is None else 2 * blocks
    specs = linear("img_in", d, 128, False, bias=False) + linear("txt_in", d, 15360, False, bias=False)
    for emb in ("time_in", "guidance_in"):
        specs += linear(f"{emb}.in_layer", d, 256, False, bias=False)
        specs += linear(f"{emb}.out_layer", d, d, False, bias=False)
    specs += linear("double_stream_modulation_img.lin", 6 * d, d, True, bias=False)
    specs += linear("double_stream_modulation_txt.lin", 6 * d, d, True, bias=False)
    specs += linear("single_stream_modulation.lin", 3 * d, d, True, bias=False)
    for i in range(double):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            specs += linear(f"{p}_attn.qkv", 3 * d, d, True, bias=False)
            specs += linear(f"{p}_attn.proj", d, d, True, bias=False)
            specs += norms(f"{p}_attn.norm.query_norm.scale", f"{p}_attn.norm.key_norm.scale", width=head)
            specs += linear(f"{p}_mlp.0", 2 * mlp, d, True, bias=False) + linear(f"{p}_mlp.2", d, mlp, True, bias=False)
    for i in range(single):
        p = f"single_blocks.{i}"
        specs += linear(f"{p}.linear1", 3 * d + 2 * mlp, d, True, bias=False)
        specs += linear(f"{p}.linear2", d, d + mlp, True, bias=False)
        specs += norms(f"{p}.norm.query_norm.scale", f"{p}.norm.key_norm.scale", width=head)
    specs += linear("final_layer.adaLN_modulation.1", 2 * d, d, False, bias=False)
    return specs + linear("final_layer.linear", 128, d, False, bias=False)


# The forward pass's model code (`--method forward`):
# Flux.2 dev and klein (BFL / ComfyUI names: double_blocks, single_blocks, img_in, txt_in,
# double_stream_modulation_img/txt, single_stream_modulation, final_layer).
#
# diffusers' Flux2Transformer2DModel multiplies the timestep and guidance by 1000 inside: the
# inputs carry t and g as they are. Positions have four axes (time, row, column, text index):
# image tokens (0, row, column, 0), text tokens (0, 0, 0, index), as its pipeline builds them.
# Its converter splits the fused qkv in three equal chunks and keeps the single blocks' fused
# `linear1` whole: no hard-coded width. klein has no guidance embedder (no `guidance_in`).


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
    import torch

    from fp8stream.families.samples import image_ids, packed_latents

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


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("context_embedder", "txt_in"),
    ("double_stream_modulation_img.linear", "double_stream_modulation_img.lin"),
    ("double_stream_modulation_txt.linear", "double_stream_modulation_txt.lin"),
    ("norm_out.linear", "final_layer.adaLN_modulation.1"),
    ("proj_out", "final_layer.linear"),
    ("single_stream_modulation.linear", "single_stream_modulation.lin"),
    ("single_transformer_blocks.{}.attn.to_out", "single_blocks.{}.linear2"),
    ("single_transformer_blocks.{}.attn.to_qkv_mlp_proj", "single_blocks.{}.linear1"),
    ("time_guidance_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
    ("time_guidance_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
    ("time_guidance_embed.timestep_embedder.linear_1", "time_in.in_layer"),
    ("time_guidance_embed.timestep_embedder.linear_2", "time_in.out_layer"),
    ("transformer_blocks.{}.attn.add_k_proj", "double_blocks.{}.txt_attn.qkv"),
    ("transformer_blocks.{}.attn.add_q_proj", "double_blocks.{}.txt_attn.qkv"),
    ("transformer_blocks.{}.attn.add_v_proj", "double_blocks.{}.txt_attn.qkv"),
    ("transformer_blocks.{}.attn.to_add_out", "double_blocks.{}.txt_attn.proj"),
    ("transformer_blocks.{}.attn.to_k", "double_blocks.{}.img_attn.qkv"),
    ("transformer_blocks.{}.attn.to_out.0", "double_blocks.{}.img_attn.proj"),
    ("transformer_blocks.{}.attn.to_q", "double_blocks.{}.img_attn.qkv"),
    ("transformer_blocks.{}.attn.to_v", "double_blocks.{}.img_attn.qkv"),
    ("transformer_blocks.{}.ff.linear_in", "double_blocks.{}.img_mlp.0"),
    ("transformer_blocks.{}.ff.linear_out", "double_blocks.{}.img_mlp.2"),
    ("transformer_blocks.{}.ff_context.linear_in", "double_blocks.{}.txt_mlp.0"),
    ("transformer_blocks.{}.ff_context.linear_out", "double_blocks.{}.txt_mlp.2"),
    ("x_embedder", "img_in"),
)
# end of derived renames


FAMILY = Family(
    "flux2", "dit",
    DetectionRule(("single_stream_modulation.lin.weight",), "diffusers: flux2", "img_in.weight",
                  ("double_blocks.", "single_blocks."), ("double_stream_modulation_img.lin.weight",)),
    variant,
    presets=PRESETS,
    inventories=(("flux2", inventory),),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
