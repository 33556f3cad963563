"""Cosmos 1.0 and Cosmos Predict2."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import rename_prefixes, self_value_sources
from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks, holds
from fp8stream.families.spec import TensorSpec, linear as _linear

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan


def variant(bare, width, blocks) -> str:
    """Cosmos 1.0 nests its blocks (blocks.blockN.blocks.M.block); Predict2 2B is 2048 wide, 14B 5120."""
    if holds(bare, "blocks.block0.blocks.0.block.attn.to_q.0.weight"):
        return {4096: "cosmos-1.0-7B", 5120: "cosmos-1.0-14B"}.get(width, "cosmos-1.0")
    return {2048: "cosmos-predict2-2B", 5120: "cosmos-predict2-14B"}.get(width, "cosmos-predict2")


PRESETS = (
    ("x_embedder.*", "embedder"), ("t_embedder.*", "embedder"), ("crossattn_proj.*", "embedder"),
    ("img_context_proj.*", "embedder"), ("final_layer.*", "final projection"),
)


# Cosmos Predict2 inventories at real size (NVIDIA / ComfyUI names), for scripts/bench.py --arch.
#
# 14B: width 5120 (40 heads of 128), 36 blocks, MLP 20480; 2B: width 2048 (16 heads), 28 blocks,
# MLP 8192. Both: T5 text 1024 wide, AdaLN-LoRA of rank 256, patches 1x2x2 over 16 latent
# channels plus Video2World's condition mask and the padding mask, no biases. Block linears
# (attention, MLP, AdaLN-LoRA) FP8; embedders and the final layer BF16.


def predict2_14b(blocks: int | None = None) -> list[TensorSpec]:
    return predict2(5120, 20480, 36 if blocks is None else blocks)


def predict2_2b(blocks: int | None = None) -> list[TensorSpec]:
    return predict2(2048, 8192, 28 if blocks is None else blocks)


def predict2(d: int, mlp: int, n: int, text: int = 1024, lora: int = 256, head: int = 128) -> list[TensorSpec]:
    specs = _linear("x_embedder.proj.1", d, (16 + 2) * 4, False, bias=False)
    specs += _linear("t_embedder.1.linear_1", d, d, False, bias=False)
    specs += _linear("t_embedder.1.linear_2", 3 * d, d, False, bias=False)
    specs.append(TensorSpec("t_embedding_norm.weight", (d,), False))
    for i in range(n):
        p = f"blocks.{i}."
        for part in ("self_attn", "cross_attn", "mlp"):
            specs += _linear(f"{p}adaln_modulation_{part}.1", lora, d, True, bias=False)
            specs += _linear(f"{p}adaln_modulation_{part}.2", 3 * d, lora, True, bias=False)
        for attn, kv in (("self_attn", d), ("cross_attn", text)):
            specs += _linear(f"{p}{attn}.q_proj", d, d, True, bias=False)
            specs += _linear(f"{p}{attn}.k_proj", d, kv, True, bias=False)
            specs += _linear(f"{p}{attn}.v_proj", d, kv, True, bias=False)
            specs += _linear(f"{p}{attn}.output_proj", d, d, True, bias=False)
            specs += [TensorSpec(f"{p}{attn}.q_norm.weight", (head,), False),
                      TensorSpec(f"{p}{attn}.k_norm.weight", (head,), False)]
        specs += _linear(p + "mlp.layer1", mlp, d, True, bias=False)
        specs += _linear(p + "mlp.layer2", d, mlp, True, bias=False)
    specs += _linear("final_layer.adaln_modulation.1", lora, d, False, bias=False)
    specs += _linear("final_layer.adaln_modulation.2", 2 * d, lora, False, bias=False)
    specs += _linear("final_layer.linear", 16 * 4, d, False, bias=False)
    return specs


# The forward pass's model code (`--method forward`):
# Cosmos Predict2 / Cosmos 2.x (NVIDIA / ComfyUI names: x_embedder.proj.1, t_embedder.1,
# t_embedding_norm, blocks.N.{self_attn, cross_attn}.{q,k,v,output}_proj, blocks.N.mlp.layer1,
# blocks.N.adaln_modulation_*, final_layer, ...). Cosmos 1.0's layout (blocks.blockN.blocks.M.block)
# is recognised by the detector but has no configuration here yet: the pass says so and the
# layers get the bound or stay weight-only.
#
# Timestep convention (diffusers' Cosmos 2 pipelines): t = sigma / (sigma + 1) in [0, 1], the
# latent scaled by c_in = 1 - t, so the model reads x_t = (1 - t) x0 + t eps and the timestep t
# itself (not x 1000). Video2World conditions on the first latent frame: clean, timestep ~0, a
# 1-channel condition mask set there; the timestep is then per frame ([batch, 1, frames, 1, 1]).
#
# Every Cosmos concatenates a padding-mask channel (zeros for full frames) before the patch
# embedding; diffusers resizes it with torchvision, which this package does not need: the model is
# built with `concat_padding_mask=False` and one more input channel, and the zero channel is
# concatenated here (the same patch-embedding input). RoPE's extrapolation ratios cannot be read
# from the file: diffusers' defaults are used (they move positional frequencies, not layer ranges).


PATCH = (1, 2, 2)  # ComfyUI's patch_temporal 1, patch_spatial 2 (every Cosmos release)


T_CONDITIONING = 1e-4 / (1 + 1e-4)  # the pipelines' sigma_conditioning 1e-4 as a time


FPS = 16


# names diffusers' 2.0 converter leaves as they are (ours): the learnable position embedding
_RENAMES = {"extra_pos_embedder.": "learnable_pos_embed."}


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    if "blocks.block0.blocks.0.block.attn.to_q.0.weight" in shapes:
        raise ValueError("Cosmos 1.0 layout (blocks.blockN): the forward pass maps Cosmos Predict2 / 2.x only")
    hidden, cols = shapes["x_embedder.proj.1.weight"]
    head_dim = shapes["blocks.0.self_attn.q_norm.weight"][0]
    patch = math.prod(PATCH)
    pos = [shapes.get(f"extra_pos_embedder.pos_emb_{a}") for a in "thw"]
    proj = shapes.get("crossattn_proj.0.weight")
    image = shapes.get("img_context_proj.0.weight")
    return {
        "in_channels": cols // patch,  # latent + condition mask + padding mask (concatenated here)
        "out_channels": shapes["final_layer.linear.weight"][0] // patch,
        "num_attention_heads": hidden // head_dim,
        "attention_head_dim": head_dim,
        "num_layers": count_blocks(shapes, "blocks."),
        "mlp_ratio": shapes["blocks.0.mlp.layer1.weight"][0] / hidden,
        "text_embed_dim": shapes["blocks.0.cross_attn.k_proj.weight"][1],
        "adaln_lora_dim": shapes["blocks.0.adaln_modulation_self_attn.1.weight"][0],
        "max_size": tuple(p[0] * s for p, s in zip(pos, PATCH, strict=True)) if all(pos) else (128, 240, 240),
        "patch_size": PATCH,
        "concat_padding_mask": False,
        "extra_pos_embed_type": "learnable" if all(pos) else None,
        "use_crossattn_projection": proj is not None,
        "crossattn_proj_in_channels": proj[1] if proj else 1024,
        "encoder_hidden_states_channels": proj[0] if proj else 1024,
        "img_context_dim_in": image[1] if image else None,
        "img_context_dim_out": image[0] if image else 2048,
    }


def model_class():
    from diffusers import CosmosTransformer3DModel

    return CosmosTransformer3DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_cosmos_transformer_checkpoint_to_diffusers as fn

    return rename_prefixes(fn(dict(state)), _RENAMES)


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    import torch

    from fp8stream.families.samples import grid

    b = plan.size
    out_ch, extra = cfg["out_channels"], cfg["in_channels"] - cfg["out_channels"]
    conditioned = extra == 2  # Video2World: a condition-mask channel before the padding mask
    # the rope and a learned position table hold max_size / patch positions per axis: a larger
    # latent fails inside the model (a small table is only a tiny test model's, real ones hold 120)
    most_t, most_h, most_w = (m // p for m, p in zip(cfg["max_size"], PATCH, strict=True))
    frames = min(2 if conditioned or plan.image_tokens >= 64 else 1, most_t)
    h, w = grid(max(1, plan.image_tokens // frames))
    h, w = min(h, most_h), min(w, most_w)
    shape = (b, out_ch, frames * PATCH[0], h * PATCH[1], w * PATCH[2])
    x0, noise = plan.randn(*shape[1:]), plan.randn(*shape[1:])
    t = plan.timesteps()
    latent = plan.noised(x0, noise, t)  # c_in x (x0 + sigma eps) = (1 - t) x0 + t eps
    timestep = t
    parts = [latent]
    if conditioned:
        latent[:, :, :1] = x0[:, :, :1]
        timestep = t.reshape(b, 1, 1, 1, 1).repeat(1, 1, shape[2], 1, 1)
        timestep[:, :, :1] = T_CONDITIONING
        mask = torch.zeros((b, 1) + shape[2:])
        mask[:, :, :1] = 1.0
        parts.append(mask)
    elif extra > 1:  # a layout we do not know: Gaussian extra channels
        parts.append(plan.randn(extra - 1, *shape[2:]))
    parts.append(torch.zeros((b, 1) + shape[2:]))  # the padding mask: full frames
    text = cfg["crossattn_proj_in_channels"] if cfg["use_crossattn_projection"] else cfg["text_embed_dim"]
    return {
        "hidden_states": torch.cat(parts, dim=1),
        "timestep": timestep,  # t in [0, 1]
        "encoder_hidden_states": plan.text(text),
        "fps": FPS,
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    return self_value_sources(f"transformer_blocks.{i}.{attn}." for i in range(cfg["num_layers"])
                              for attn in ("attn1", "attn2"))


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("norm_out.linear_1", "final_layer.adaln_modulation.1"),
    ("norm_out.linear_2", "final_layer.adaln_modulation.2"),
    ("patch_embed.proj", "x_embedder.proj.1"),
    ("proj_out", "final_layer.linear"),
    ("time_embed.t_embedder.linear_1", "t_embedder.1.linear_1"),
    ("time_embed.t_embedder.linear_2", "t_embedder.1.linear_2"),
    ("transformer_blocks.{}.attn1.to_k", "blocks.{}.self_attn.k_proj"),
    ("transformer_blocks.{}.attn1.to_out.0", "blocks.{}.self_attn.output_proj"),
    ("transformer_blocks.{}.attn1.to_q", "blocks.{}.self_attn.q_proj"),
    ("transformer_blocks.{}.attn1.to_v", "blocks.{}.self_attn.v_proj"),
    ("transformer_blocks.{}.attn2.to_k", "blocks.{}.cross_attn.k_proj"),
    ("transformer_blocks.{}.attn2.to_out.0", "blocks.{}.cross_attn.output_proj"),
    ("transformer_blocks.{}.attn2.to_q", "blocks.{}.cross_attn.q_proj"),
    ("transformer_blocks.{}.attn2.to_v", "blocks.{}.cross_attn.v_proj"),
    ("transformer_blocks.{}.ff.net.0.proj", "blocks.{}.mlp.layer1"),
    ("transformer_blocks.{}.ff.net.2", "blocks.{}.mlp.layer2"),
    ("transformer_blocks.{}.norm1.linear_1", "blocks.{}.adaln_modulation_self_attn.1"),
    ("transformer_blocks.{}.norm1.linear_2", "blocks.{}.adaln_modulation_self_attn.2"),
    ("transformer_blocks.{}.norm2.linear_1", "blocks.{}.adaln_modulation_cross_attn.1"),
    ("transformer_blocks.{}.norm2.linear_2", "blocks.{}.adaln_modulation_cross_attn.2"),
    ("transformer_blocks.{}.norm3.linear_1", "blocks.{}.adaln_modulation_mlp.1"),
    ("transformer_blocks.{}.norm3.linear_2", "blocks.{}.adaln_modulation_mlp.2"),
)
# end of derived renames


FAMILY = Family(
    "cosmos", "dit",
    DetectionRule(("blocks.block0.blocks.0.block.attn.to_q.0.weight", "blocks.0.self_attn.q_proj.weight"),
                  "diffusers: cosmos-1.0, cosmos-2.0", "x_embedder.proj.1.weight", ("blocks.",)),
    variant,
    presets=PRESETS, edge_blocks=r"^blocks\.(?:block)?(\d+)\.",
    inventories=(("cosmos-14b", predict2_14b), ("cosmos-2b", predict2_2b)),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
