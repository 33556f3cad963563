"""AuraFlow (v0.1-v0.3, fal): 4 MMDiT blocks then 32 single-stream blocks, under the original
names ComfyUI's files use (comfy/ldm/aura/mmdit.py: double_layers, single_layers, w1q/w2q, mlpX,
modX, cond_seq_linear, init_x_linear, t_embedder.mlp, modF, final_linear)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import joint_value_sources, self_value_sources
from fp8stream.families.family import DetectionRule, Family, ModelCode, SharedInput, count_blocks
from fp8stream.families.spec import TensorSpec, linear

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

# diffusers' test (CHECKPOINT_KEY_NAMES["auraflow"]) requires all of w2q, w1q, cond_seq_linear and
# t_embedder.mlp.0; any one counts here, so t_embedder.mlp.0.weight is left out (SD3's and Sana's
# files hold it too). ComfyUI's own test is w1q (comfy/model_detection.py).
KEYS = ("double_layers.0.attn.w2q.weight", "double_layers.0.attn.w1q.weight", "cond_seq_linear.weight")

PRESETS = (
    ("init_x_linear", "embedder"), ("cond_seq_linear", "embedder"), ("t_embedder.*", "embedder"),
    ("modF.*", "final projection"), ("final_linear", "final projection"),
)

# Siblings that read one input (comfy/ldm/aura/mmdit.py): an attention's q, k and v (w1*: the
# text stream of a double block and the joint stream of a single block; w2*: the image stream of
# a double block) and the gated MLP's c_fc1, c_fc2 (silu(c_fc1(x)) * c_fc2(x)). ComfyUI runs them
# apart; diffusers' fuse_qkv_projections fuses each stream's q, k and v into one matmul.
SHARED_INPUTS = (
    SharedInput(r"(double|single)_layers\.\d+\.attn$", ("w1q", "w1k", "w1v")),
    SharedInput(r"double_layers\.\d+\.attn$", ("w2q", "w2k", "w2v")),
    SharedInput(r"(double_layers\.\d+\.mlp[CX]|single_layers\.\d+\.mlp)$", ("c_fc1", "c_fc2")),
)


# For scripts/bench.py --arch (`families.inventory`):
# AuraFlow at real size, from the transformer/config.json of fal/AuraFlow and AuraFlow-v0.2 (v0.3:
# the same class, 6.8B parameters; its position count was not checked): 12 heads of 256 (width
# 3072), 4 MMDiT + 32 single blocks, gated MLP of find_multiple(int(2 * 4 * 3072 / 3), 256) = 8192,
# text states of 2048 (Pile-T5-XL / UMT5), 2x2 patches of 4 latent channels (SDXL's VAE), 4096
# positions; 6.84B parameters here. No biases but the patch and time embedders'
# (comfy/ldm/aura/mmdit.py). Block linears (modulation included) FP8; embedders, modF and
# final_linear BF16.


def inventory(blocks: int | None = None) -> list[TensorSpec]:
    d, mlp, text = 3072, 8192, 2048
    double = 4 if blocks is None else blocks
    single = 32 if blocks is None else blocks
    specs = linear("init_x_linear", d, 16, False) + linear("cond_seq_linear", d, text, False, bias=False)
    specs += [TensorSpec("positional_encoding", (1, 4096, d), False), TensorSpec("register_tokens", (1, 8, d), False)]
    specs += linear("t_embedder.mlp.0", d, 256, False) + linear("t_embedder.mlp.2", d, d, False)
    for i in range(double):
        p = f"double_layers.{i}."
        specs += [s for w in ("w1q", "w1k", "w1v", "w1o", "w2q", "w2k", "w2v", "w2o")
                  for s in linear(f"{p}attn.{w}", d, d, True, bias=False)]
        for stream in "CX":
            specs += linear(f"{p}mod{stream}.1", 6 * d, d, True, bias=False)
            specs += _mlp(f"{p}mlp{stream}.", d, mlp)
    for i in range(single):
        p = f"single_layers.{i}."
        specs += [s for w in ("w1q", "w1k", "w1v", "w1o") for s in linear(f"{p}attn.{w}", d, d, True, bias=False)]
        specs += linear(f"{p}modCX.1", 6 * d, d, True, bias=False) + _mlp(f"{p}mlp.", d, mlp)
    return specs + linear("modF.1", 2 * d, d, False, bias=False) + linear("final_linear", 16, d, False, bias=False)


def _mlp(p: str, d: int, mlp: int) -> list[TensorSpec]:
    """The gated MLP: c_fc1 and c_fc2 (d -> mlp), c_proj (mlp -> d)."""
    specs = linear(p + "c_fc1", mlp, d, True, bias=False) + linear(p + "c_fc2", mlp, d, True, bias=False)
    return specs + linear(p + "c_proj", d, mlp, True, bias=False)


# The forward pass's model code (`--method forward`):
# diffusers' AuraFlowTransformer2DModel, its single-file converter
# (convert_auraflow_transformer_checkpoint_to_diffusers: w2q -> attn.to_q, w1q -> add_q_proj,
# modF's shift/scale halves swapped into norm_out.linear, ...).
#
# What the file does not say: the head count. The q/k norms are LayerNorms without weights, so no
# shape holds it; ComfyUI builds every AuraFlow with n_heads 12 (MMDiT's default; model_detection
# sets max_seq, cond_seq_dim and the block counts only), as diffusers' config does. Patches are
# 2x2 in every release (ComfyUI's and diffusers' default; the channels follow from init_x_linear).
#
# Timestep convention: ComfyUI passes sigma in [0, 1] (AuraFlow's sampling multiplier 1.0) and its
# embedder scales the frequencies by 1000; diffusers' pipeline passes its timestep / 1000 (sigma)
# and the model's Timesteps(scale=1000) multiplies by 1000. So the inputs carry t itself, with the
# latent x_t = (1 - t) x0 + t eps (flow matching, FlowMatchEulerDiscreteScheduler).


PATCH = 2
HEADS = 12


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    width, cols = shapes["init_x_linear.weight"]
    if width % HEADS:
        raise ValueError(f"width {width} is not {HEADS} heads (ComfyUI's n_heads)")
    return {
        "patch_size": PATCH,
        "in_channels": cols // (PATCH * PATCH),
        "out_channels": shapes["final_linear.weight"][0] // (PATCH * PATCH),
        "num_mmdit_layers": count_blocks(shapes, "double_layers."),
        "num_single_dit_layers": count_blocks(shapes, "single_layers."),
        "attention_head_dim": width // HEADS,
        "num_attention_heads": HEADS,
        "joint_attention_dim": shapes["cond_seq_linear.weight"][1],
        "caption_projection_dim": shapes["cond_seq_linear.weight"][0],
        "pos_embed_max_size": shapes["positional_encoding"][1],
    }


def model_class():
    from diffusers import AuraFlowTransformer2DModel

    return AuraFlowTransformer2DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_auraflow_transformer_checkpoint_to_diffusers as fn

    return fn(dict(state))


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    from fp8stream.families.samples import grid, noised_latents

    # positions come from a square table, centred: a latent wider than its side fails in the model
    side = math.isqrt(cfg["pos_embed_max_size"])
    h, w = grid(plan.image_tokens)
    h, w = min(h, side), min(w, side)
    latents, t = noised_latents(plan, cfg["in_channels"], h * PATCH, w * PATCH)
    return {
        "hidden_states": latents,
        "encoder_hidden_states": plan.text(cfg["joint_attention_dim"]),
        "timestep": t,  # sigma in [0, 1]: the model multiplies by 1000
    }


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Joint attention in the MMDiT blocks (both output projections read both streams' values), the
    single blocks' attention mixes its own values (diffusers' names)."""
    single = (f"single_transformer_blocks.{i}.attn." for i in range(cfg["num_single_dit_layers"]))
    return joint_value_sources(cfg["num_mmdit_layers"], "joint_transformer_blocks") | self_value_sources(single)


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("context_embedder", "cond_seq_linear"),
    ("joint_transformer_blocks.{}.attn.add_k_proj", "double_layers.{}.attn.w1k"),
    ("joint_transformer_blocks.{}.attn.add_q_proj", "double_layers.{}.attn.w1q"),
    ("joint_transformer_blocks.{}.attn.add_v_proj", "double_layers.{}.attn.w1v"),
    ("joint_transformer_blocks.{}.attn.to_add_out", "double_layers.{}.attn.w1o"),
    ("joint_transformer_blocks.{}.attn.to_k", "double_layers.{}.attn.w2k"),
    ("joint_transformer_blocks.{}.attn.to_out.0", "double_layers.{}.attn.w2o"),
    ("joint_transformer_blocks.{}.attn.to_q", "double_layers.{}.attn.w2q"),
    ("joint_transformer_blocks.{}.attn.to_v", "double_layers.{}.attn.w2v"),
    ("joint_transformer_blocks.{}.ff.linear_1", "double_layers.{}.mlpX.c_fc1"),
    ("joint_transformer_blocks.{}.ff.linear_2", "double_layers.{}.mlpX.c_fc2"),
    ("joint_transformer_blocks.{}.ff.out_projection", "double_layers.{}.mlpX.c_proj"),
    ("joint_transformer_blocks.{}.ff_context.linear_1", "double_layers.{}.mlpC.c_fc1"),
    ("joint_transformer_blocks.{}.ff_context.linear_2", "double_layers.{}.mlpC.c_fc2"),
    ("joint_transformer_blocks.{}.ff_context.out_projection", "double_layers.{}.mlpC.c_proj"),
    ("joint_transformer_blocks.{}.norm1.linear", "double_layers.{}.modX.1"),
    ("joint_transformer_blocks.{}.norm1_context.linear", "double_layers.{}.modC.1"),
    ("norm_out.linear", "modF.1"),
    ("pos_embed.proj", "init_x_linear"),
    ("proj_out", "final_linear"),
    ("single_transformer_blocks.{}.attn.to_k", "single_layers.{}.attn.w1k"),
    ("single_transformer_blocks.{}.attn.to_out.0", "single_layers.{}.attn.w1o"),
    ("single_transformer_blocks.{}.attn.to_q", "single_layers.{}.attn.w1q"),
    ("single_transformer_blocks.{}.attn.to_v", "single_layers.{}.attn.w1v"),
    ("single_transformer_blocks.{}.ff.linear_1", "single_layers.{}.mlp.c_fc1"),
    ("single_transformer_blocks.{}.ff.linear_2", "single_layers.{}.mlp.c_fc2"),
    ("single_transformer_blocks.{}.ff.out_projection", "single_layers.{}.mlp.c_proj"),
    ("single_transformer_blocks.{}.norm1.linear", "single_layers.{}.modCX.1"),
    ("time_step_proj.linear_1", "t_embedder.mlp.0"),
    ("time_step_proj.linear_2", "t_embedder.mlp.2"),
)
# end of derived renames


FAMILY = Family(
    "auraflow", "dit",
    DetectionRule(KEYS, "diffusers: auraflow", "init_x_linear.weight", ("double_layers.", "single_layers.")),
    presets=PRESETS,
    shared_inputs=SHARED_INPUTS,
    inventories=(("auraflow", inventory),),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
