"""Stable Diffusion 3 / 3.5 (MMDiT, `joint_blocks`)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import joint_value_sources, self_value_sources
from fp8stream.families.family import DetectionRule, Family, ModelCode, count_blocks
from fp8stream.families.graph_types import Act, AdaLN, External, ProducerGraph, Sinusoid, Source, Vec, dit_stream
from fp8stream.families.spec import TensorSpec, linear

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan


def variant(bare, width, blocks) -> str:
    """SD3 medium and SD3.5 medium are 1536 wide (24 blocks; 3.5 has the second attention),
    SD3.5 large 2432 (38 blocks); fewer blocks than the full model: pruned."""
    dual = any(k.endswith(".x_block.attn2.qkv.weight") for k in bare)
    name, full = {1536: ("sd3.5-medium" if dual else "sd3-medium", 24),
                  2432: ("sd3.5-large", 38)}.get(width, ("sd3", 0))
    if full and blocks and blocks[0] < full:
        return f"{name} pruned to {blocks[0]} blocks"
    return name


PRESETS = (
    ("x_embedder.*", "embedder"), ("context_embedder", "embedder"), ("t_embedder.*", "embedder"),
    ("y_embedder.*", "embedder"), ("final_layer.*", "final projection"),
    ("time_text_embed.*", "embedder"), ("norm_out.*", "final projection"), ("proj_out", "final projection"),
)


# SD3.5-large at real size (names and shapes as ComfyUI loads them), for scripts/bench.py --arch.


def sd35_large(blocks: int | None = None) -> list[TensorSpec]:
    """SD3.5-large (MMDiT): hidden 2432, 38 joint blocks (8B parameters)."""
    d = 2432
    n = 38 if blocks is None else blocks
    specs: list[TensorSpec] = [TensorSpec("pos_embed", (1, 36864, d), False),
                               TensorSpec("x_embedder.proj.weight", (d, 16, 2, 2), False),
                               TensorSpec("x_embedder.proj.bias", (d,), False)]
    specs += linear("context_embedder", d, 4096, False)
    specs += linear("t_embedder.mlp.0", d, 256, False) + linear("t_embedder.mlp.2", d, d, False)
    specs += linear("y_embedder.mlp.0", d, 2048, False) + linear("y_embedder.mlp.2", d, d, False)
    for i in range(n):
        last = i == n - 1
        for part in ("x_block", "context_block"):
            p = f"joint_blocks.{i}.{part}"
            pre_only = last and part == "context_block"
            specs += linear(f"{p}.adaLN_modulation.1", (2 if pre_only else 6) * d, d, True)
            specs += linear(f"{p}.attn.qkv", 3 * d, d, True)
            specs += [TensorSpec(f"{p}.attn.ln_q.weight", (64,), False),
                      TensorSpec(f"{p}.attn.ln_k.weight", (64,), False)]
            if not pre_only:
                specs += linear(f"{p}.attn.proj", d, d, True)
                specs += linear(f"{p}.mlp.fc1", 4 * d, d, True) + linear(f"{p}.mlp.fc2", d, 4 * d, True)
    specs += linear("final_layer.adaLN_modulation.1", 2 * d, d, False) + linear("final_layer.linear", 64, d, False)
    return specs


# The producer graph of the bound (`--method simulate`): where each linear's input comes from.
# SD3/MMDiT:   joint_blocks.N.{x,context}_block.adaLN_modulation.1  SiLU(vec); chunks (shift, scale, gate) x2
#              ..._block.attn.qkv, mlp.fc1 ................... AdaLN of chunks 0/1, 3/4
#              ..._block.attn.proj ........................... attention mix of v rows of attn.qkv
#              ..._block.mlp.fc2 ............................. GELU(mlp.fc1)
#              t_embedder.mlp.0 / .2, y_embedder.mlp.0 / .2 .. sinusoid / SiLU / pooled text
#              vec = t_embedder(t) + y_embedder(pooled); context_embedder: T5 states


def sources(name: str, has: set[str]) -> Source | None:
    if m := re.fullmatch(r"(joint_blocks\.\d+\.(?:x_block|context_block)\.)"
                         r"(adaLN_modulation\.1|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)", name):
        p = m.group(1)
        # a pre-only context block has 2 chunks (shift, scale); the others 6
        chunks = 6 if (p + "mlp.fc1") in has or (p + "attn.proj") in has else 2
        return dit_stream("sd3", p, m.group(2), ("adaLN_modulation.1", "attn.qkv", "mlp.fc1"), chunks)
    table = {
        "final_layer.adaLN_modulation.1": Vec("sd3"),
        "final_layer.linear": AdaLN("final_layer.adaLN_modulation.1", 0, 1, 2),
        "t_embedder.mlp.0": Sinusoid(),
        "t_embedder.mlp.2": Act("silu", "t_embedder.mlp.0"),
        "y_embedder.mlp.0": External("pooled text embedding"),
        "y_embedder.mlp.2": Act("silu", "y_embedder.mlp.0"),
        "context_embedder": External("text-encoder states"),
    }
    return table.get(name)


VEC_TERMS = (("time", "t_embedder.mlp.0", "t_embedder.mlp.2"), ("pooled", "y_embedder.mlp.0", "y_embedder.mlp.2"))


# The forward pass's model code (`--method forward`):
# SD3 / SD3.5 MMDiT (original / ComfyUI names: joint_blocks, x_embedder, context_embedder, ...).
#
# diffusers' SD3Transformer2DModel takes the timestep in [0, 1000]. Heads: SD3 uses head_dim 64;
# the q/k norm's width says it when the checkpoint has one (SD3.5).


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
    from fp8stream.families.samples import grid, noised_latents

    p = cfg["patch_size"]
    h, w = grid(plan.image_tokens)
    h, w = min(h, cfg["pos_embed_max_size"]), min(w, cfg["pos_embed_max_size"])
    shape = (cfg["in_channels"], h * p, w * p)
    latents, t = noised_latents(plan, *shape)
    return {
        "hidden_states": latents,
        "encoder_hidden_states": plan.text(cfg["joint_attention_dim"]),
        "pooled_projections": plan.pooled(cfg["pooled_projection_dim"]),
        "timestep": t * 1000.0,  # diffusers' SD3 takes 0-1000
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Attention output projections -> the Linears whose outputs their input mixes (joint
    attention: both streams' values; SD3.5's second attention: the image stream's)."""
    second = (f"transformer_blocks.{i}.attn2." for i in cfg["dual_attention_layers"])
    return joint_value_sources(cfg["num_layers"]) | self_value_sources(second)


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("context_embedder", "context_embedder"),
    ("norm_out.linear", "final_layer.adaLN_modulation.1"),
    ("proj_out", "final_layer.linear"),
    ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
    ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
    ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
    ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
    ("transformer_blocks.{}.attn.add_k_proj", "joint_blocks.{}.context_block.attn.qkv"),
    ("transformer_blocks.{}.attn.add_q_proj", "joint_blocks.{}.context_block.attn.qkv"),
    ("transformer_blocks.{}.attn.add_v_proj", "joint_blocks.{}.context_block.attn.qkv"),
    ("transformer_blocks.{}.attn.to_add_out", "joint_blocks.{}.context_block.attn.proj"),
    ("transformer_blocks.{}.attn.to_k", "joint_blocks.{}.x_block.attn.qkv"),
    ("transformer_blocks.{}.attn.to_out.0", "joint_blocks.{}.x_block.attn.proj"),
    ("transformer_blocks.{}.attn.to_q", "joint_blocks.{}.x_block.attn.qkv"),
    ("transformer_blocks.{}.attn.to_v", "joint_blocks.{}.x_block.attn.qkv"),
    ("transformer_blocks.{}.ff.net.0.proj", "joint_blocks.{}.x_block.mlp.fc1"),
    ("transformer_blocks.{}.ff.net.2", "joint_blocks.{}.x_block.mlp.fc2"),
    ("transformer_blocks.{}.ff_context.net.0.proj", "joint_blocks.{}.context_block.mlp.fc1"),
    ("transformer_blocks.{}.ff_context.net.2", "joint_blocks.{}.context_block.mlp.fc2"),
    ("transformer_blocks.{}.norm1.linear", "joint_blocks.{}.x_block.adaLN_modulation.1"),
    ("transformer_blocks.{}.norm1_context.linear", "joint_blocks.{}.context_block.adaLN_modulation.1"),
)
# end of derived renames


FAMILY = Family(
    "sd3", "dit",
    DetectionRule(("joint_blocks.0.context_block.adaLN_modulation.1.bias", "joint_blocks.37.x_block.mlp.fc1.weight"),
                  "diffusers: sd3, sd35_large", "x_embedder.proj.weight", ("joint_blocks.",),
                  ("joint_blocks.0.x_block.attn.qkv.weight", "joint_blocks.0.context_block.attn.qkv.weight"),
                  ("joint_blocks.",)),
    variant,
    presets=PRESETS,
    inventories=(("sd35", sd35_large),),
    graph=ProducerGraph(sources, VEC_TERMS),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
