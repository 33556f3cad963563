"""Qwen-Image (and its edit models): ComfyUI's files use diffusers' names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import joint_value_sources
from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks
from fp8stream.families.flux import rope_axes
from fp8stream.families.spec import TensorSpec, linear, norms

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

PRESETS = (  # diffusers' names
    ("img_in", "embedder"), ("txt_in", "embedder"), ("time_text_embed.*", "embedder"),
    ("norm_out.*", "final projection"), ("proj_out", "final projection"),
)

# ComfyUI tests txt_norm


# For scripts/bench.py --arch (`families.inventory`):
# Qwen-Image at real size (ComfyUI's files use diffusers' names): hidden 3072 (24 heads of
# 128), 60 joint blocks, MLP 12288, Qwen2.5-VL text states of 3584, 2x2 patches of 16 channels
# (20B parameters). Block linears (modulation included) in FP8, embedders and output in BF16.


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d, mlp, head = 3072, 12288, 128
    n = 60 if blocks is None else blocks
    specs = norms("txt_norm.weight", width=3584) + linear("img_in", d, 64, False) + linear("txt_in", d, 3584, False)
    specs += linear("time_text_embed.timestep_embedder.linear_1", d, 256, False)
    specs += linear("time_text_embed.timestep_embedder.linear_2", d, d, False)
    for i in range(n):
        p = f"transformer_blocks.{i}"
        for s in ("img", "txt"):
            specs += linear(f"{p}.{s}_mod.1", 6 * d, d, True)
            specs += linear(f"{p}.{s}_mlp.net.0.proj", mlp, d, True) + linear(f"{p}.{s}_mlp.net.2", d, mlp, True)
        for proj in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            specs += linear(f"{p}.attn.{proj}", d, d, True)
        specs += norms(*(f"{p}.attn.{n}.weight" for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k")),
                       width=head)
    return specs + linear("norm_out.linear", 2 * d, d, False) + linear("proj_out", 64, d, False)


# The forward pass's model code (`--method forward`):
# Qwen-Image and its edit models. ComfyUI's files use diffusers' own names (transformer_blocks.N
# .img_mod.1, attn.to_q, img_mlp.net.0.proj, txt_norm, norm_out.linear, proj_out): the mapping is
# the identity, checked against the model like every other.
#
# diffusers' QwenImageTransformer2DModel takes the timestep in [0, 1] (its pipeline divides by
# 1000, its embedder multiplies by 1000) and the image grid per sample (`img_shapes`: frames, rows,
# columns of packed 2x2 latent patches). Patches are 2x2 (64 input channels = 16 x 4).


PATCH = 2


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    inner, in_channels = shapes["img_in.weight"]
    head_dim = shapes["transformer_blocks.0.attn.norm_q.weight"][0]
    return {
        "patch_size": PATCH,
        "in_channels": in_channels,
        "out_channels": shapes["proj_out.weight"][0] // (PATCH * PATCH),
        "num_layers": count_blocks(shapes, "transformer_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": inner // head_dim,
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "axes_dims_rope": rope_axes(head_dim),
        "use_additional_t_cond": "time_text_embed.addition_t_embedding.weight" in shapes,
    }


def model_class():
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    return dict(state)  # the files use diffusers' names


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    import torch

    from fp8stream.families.samples import packed_latents

    b = plan.size
    hidden, t, h, w = packed_latents(cfg["in_channels"], plan)
    out = {
        "hidden_states": hidden,
        "encoder_hidden_states": plan.text(cfg["joint_attention_dim"]),
        "encoder_hidden_states_mask": torch.ones(b, plan.text_tokens, dtype=torch.long),
        "timestep": t,  # [0, 1]: the embedder multiplies by 1000
        "img_shapes": [[(1, h, w)]] * b,
    }
    if cfg["use_additional_t_cond"]:
        out["additional_t_cond"] = torch.zeros(b, dtype=torch.long)
    return out


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Joint attention: both output projections read the mix of both streams' values."""
    return joint_value_sources(cfg["num_layers"])


FAMILY = Family(
    "qwen-image", "dit",
    DetectionRule(("txt_norm.weight",), "ours (ComfyUI: txt_norm)", "img_in.weight", ("transformer_blocks.",),
                  ("transformer_blocks.0.img_mod.1.weight",)),
    presets=PRESETS,
    inventories=(("qwen-image", inventory),),
    model=ModelCode(config, model_class, convert, inputs, value_sources))
