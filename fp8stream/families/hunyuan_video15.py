"""HunyuanVideo 1.5 (ComfyUI's names: q/k/v stored apart)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from fp8stream.families.dit_parts import joint_value_sources, rename_prefixes, self_value_sources
from fp8stream.families.family import DetectionRule, Family, ModelCode, SharedInput, count_blocks
from fp8stream.families.flux import rope_axes
from fp8stream.families.spec import TensorSpec, linear as _linear

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

PRESETS = (
    ("img_in.*", "embedder"), ("time_in.*", "embedder"), ("time_r_in.*", "embedder"),
    ("txt_in.*", "text embedder (token refiner)"), ("byt5_in.*", "embedder"), ("vision_in.*", "embedder"),
    ("final_layer.*", "final projection"),
)

# it carries HunyuanVideo's token refiner: tried before it


# HunyuanVideo 1.5 inventory at real size (ComfyUI's repack: fused q/k/v), for scripts/bench.py.
#
# 8.3B parameters: width 2048 (16 heads of 128), 54 dual-stream blocks, MLP 8192; latent input
# 65 channels (32 + 32 conditioning + 1 mask), output 32; Qwen2.5-VL text 3584 wide through a
# 2-block token refiner, ByT5 glyph text 1472 wide, SigLIP image features 1152 wide. The block
# linears are FP8; embedders, the token refiner and the final layer BF16.


def t2v_720p(blocks: int | None = None) -> list[TensorSpec]:
    d, mlp, head = 2048, 8192, 128
    n = 54 if blocks is None else blocks
    specs = [TensorSpec("img_in.proj.weight", (d, 65, 1, 1, 1), False), TensorSpec("img_in.proj.bias", (d,), False),
             TensorSpec("cond_type_embedding.weight", (3, d), False)]
    specs += _linear("time_in.mlp.0", d, 256, False) + _linear("time_in.mlp.2", d, d, False)
    specs += _linear("txt_in.input_embedder", d, 3584, False)
    specs += _linear("txt_in.t_embedder.mlp.0", d, 256, False) + _linear("txt_in.t_embedder.mlp.2", d, d, False)
    specs += _linear("txt_in.c_embedder.linear_1", d, 3584, False) + _linear("txt_in.c_embedder.linear_2", d, d, False)
    for i in range(2):
        p = f"txt_in.individual_token_refiner.blocks.{i}."
        specs += [TensorSpec(p + f"{n_}.{w}", (d,), False) for n_ in ("norm1", "norm2") for w in ("weight", "bias")]
        specs += _linear(p + "self_attn_qkv", 3 * d, d, False) + _linear(p + "self_attn_proj", d, d, False)
        specs += _linear(p + "mlp.fc1", 4 * d, d, False) + _linear(p + "mlp.fc2", d, 4 * d, False)
        specs += _linear(p + "adaLN_modulation.1", 2 * d, d, False)
    specs += [TensorSpec("byt5_in.layernorm.weight", (1472,), False),
              TensorSpec("byt5_in.layernorm.bias", (1472,), False)]
    specs += _linear("byt5_in.fc1", 2048, 1472, False) + _linear("byt5_in.fc2", 2048, 2048, False)
    specs += _linear("byt5_in.fc3", d, 2048, False)
    specs += [TensorSpec(f"vision_in.proj.{i}.{w}", (s,), False)
              for i, s in ((0, 1152), (4, d)) for w in ("weight", "bias")]
    specs += _linear("vision_in.proj.1", 1152, 1152, False) + _linear("vision_in.proj.3", d, 1152, False)
    for i in range(n):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}_"
            specs += _linear(p + "mod.linear", 6 * d, d, True) + _linear(p + "attn_qkv", 3 * d, d, True)
            specs += [TensorSpec(p + "attn_q_norm.weight", (head,), False),
                      TensorSpec(p + "attn_k_norm.weight", (head,), False)]
            specs += _linear(p + "attn_proj", d, d, True)
            specs += _linear(p + "mlp.fc1", mlp, d, True) + _linear(p + "mlp.fc2", d, mlp, True)
    specs += _linear("final_layer.linear", 32, d, False) + _linear("final_layer.adaLN_modulation.1", 2 * d, d, False)
    return specs


# The forward pass's model code (`--method forward`):
# HunyuanVideo 1.5 (Tencent / ComfyUI names: double_blocks.N.img_attn_qkv, img_mod.linear,
# txt_in.individual_token_refiner, byt5_in, vision_in, cond_type_embedding, ...).
#
# diffusers has no single-file converter for 1.5. Its blocks carry HunyuanVideo 1.0's names, so
# diffusers' 1.0 converter (`convert_hunyuan_video_transformer_to_diffusers`) maps them; the parts
# 1.0 lacks are mapped here (ours, from diffusers' conversion script for the original weights):
# the ByT5 glyph-text projection, the SigLIP image projection, the condition-type embedding, the
# MeanFlow second timestep embedder, and q/k/v stored apart (the original release) instead of
# fused (ComfyUI's repack). The 1.0 converter hard-codes no width these blocks use.
#
# diffusers' HunyuanVideo15Transformer3DModel takes the timestep in [0, 1000]. Its latent input
# concatenates the noisy latent, the conditioning latent and a 1-channel frame mask (65 = 32 + 32
# + 1); every synthetic sample is image-conditioned (first frame given, SigLIP features of 729
# tokens): with zero image features the whole batch would skip the image branch, which then
# never runs.


IMAGE_TOKENS = 729  # SigLIP's semantic tokens (the pipeline's vision_num_semantic_tokens)


MASK_CHANNELS = 1


# parts HunyuanVideo 1.0 does not have: checkpoint prefix -> diffusers prefix (ours)
_OWN_PREFIXES = {
    "byt5_in.layernorm.": "context_embedder_2.norm.",
    "byt5_in.fc1.": "context_embedder_2.linear_1.",
    "byt5_in.fc2.": "context_embedder_2.linear_2.",
    "byt5_in.fc3.": "context_embedder_2.linear_3.",
    "vision_in.proj.0.": "image_embedder.norm_in.",
    "vision_in.proj.1.": "image_embedder.linear_1.",
    "vision_in.proj.3.": "image_embedder.linear_2.",
    "vision_in.proj.4.": "image_embedder.norm_out.",
    "cond_type_embedding.": "cond_type_embed.",
    "time_r_in.mlp.0.": "time_embed.timestep_embedder_r.linear_1.",
    "time_r_in.mlp.2.": "time_embed.timestep_embedder_r.linear_2.",
}


# q/k/v stored apart (after the 1.0 converter's renames: double_blocks -> transformer_blocks)
_SPLIT_QKV = {"img_attn_q.": "attn.to_q.", "img_attn_k.": "attn.to_k.", "img_attn_v.": "attn.to_v.",
              "txt_attn_q.": "attn.add_q_proj.", "txt_attn_k.": "attn.add_k_proj.", "txt_attn_v.": "attn.add_v_proj."}


def config(shapes: Mapping[str, tuple[int, ...]]) -> dict:
    inner, in_channels, pt, ph, pw = shapes["img_in.proj.weight"]
    head_dim = shapes["double_blocks.0.img_attn_q_norm.weight"][0]
    return {
        "in_channels": in_channels,
        "out_channels": shapes["final_layer.linear.weight"][0] // (pt * ph * pw),
        "num_attention_heads": inner // head_dim,
        "attention_head_dim": head_dim,
        "num_layers": count_blocks(shapes, "double_blocks."),
        "num_refiner_layers": count_blocks(shapes, "txt_in.individual_token_refiner.blocks."),
        "mlp_ratio": shapes["double_blocks.0.img_mlp.fc1.weight"][0] / inner,
        "patch_size": ph,
        "patch_size_t": pt,
        "text_embed_dim": shapes["txt_in.input_embedder.weight"][1],
        "text_embed_2_dim": shapes["byt5_in.fc1.weight"][1],
        "image_embed_dim": shapes["vision_in.proj.1.weight"][1],
        "rope_axes_dim": rope_axes(head_dim),
        "use_meanflow": "time_r_in.mlp.0.weight" in shapes,
    }


def model_class():
    from diffusers import HunyuanVideo15Transformer3DModel

    return HunyuanVideo15Transformer3DModel


def convert(state: dict, cfg: Mapping) -> dict:
    from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers as fn

    own = {n: v for n, v in state.items() if n.startswith(tuple(_OWN_PREFIXES))}
    out = rename_prefixes(own, _OWN_PREFIXES)
    for name, value in fn({n: v for n, v in state.items() if n not in own}).items():
        if name.startswith("time_text_embed.timestep_embedder."):  # 1.5's own time embedding module
            name = "time_embed." + name[len("time_text_embed."):]
        for old, new in _SPLIT_QKV.items():
            name = name.replace("." + old, "." + new)
        out[name] = value
    return out


def inputs(cfg: Mapping, plan: SamplePlan) -> dict:
    import torch

    from fp8stream.families.samples import grid

    b = plan.size
    pt, p = cfg["patch_size_t"], cfg["patch_size"]
    out_ch = cfg["out_channels"]
    frames = 2
    h, w = grid(max(1, plan.image_tokens // frames))
    shape = (b, out_ch, frames * pt, h * p, w * p)
    x0, noise = plan.randn(*shape[1:]), plan.randn(*shape[1:])
    t = plan.timesteps()
    cond = torch.zeros(shape)
    cond[:, :, :pt] = x0[:, :, :pt]  # the given first frame's latent
    mask = torch.zeros((b, MASK_CHANNELS) + shape[2:])
    mask[:, :, :pt] = 1.0
    parts = [plan.noised(x0, noise, t)]
    if cfg["in_channels"] == 2 * out_ch + MASK_CHANNELS:
        parts += [cond, mask]
    elif cfg["in_channels"] > out_ch:  # a layout we do not know: Gaussian conditioning channels
        parts.append(plan.randn(cfg["in_channels"] - out_ch, *shape[2:]))
    latent = torch.cat(parts, dim=1)
    glyph_tokens = max(1, plan.text_tokens // 4)
    out = {
        "hidden_states": latent,
        "timestep": t * 1000.0,  # diffusers' HunyuanVideo 1.5 takes 0-1000
        "encoder_hidden_states": plan.text(cfg["text_embed_dim"]),
        "encoder_attention_mask": torch.ones(b, plan.text_tokens),
        "encoder_hidden_states_2": plan.text(cfg["text_embed_2_dim"], glyph_tokens),
        "encoder_attention_mask_2": torch.ones(b, glyph_tokens),
        "image_embeds": plan.text(cfg["image_embed_dim"], IMAGE_TOKENS),
    }
    if cfg["use_meanflow"]:  # MeanFlow distillation: the step's end time (one tenth of the run on)
        out["timestep_r"] = (t - 0.1).clamp(min=0.0) * 1000.0
    return out


def value_sources(cfg: Mapping) -> dict[str, list[list[str]]]:
    """Joint attention mixes both streams' values; the token refiner's self-attention its own."""
    refiner = (f"context_embedder.token_refiner.refiner_blocks.{i}.attn." for i in range(cfg["num_refiner_layers"]))
    return joint_value_sources(cfg["num_layers"]) | self_value_sources(refiner)


# renames: derived by scripts/derive_renames.py from this family's converter, do not edit
DIFFUSERS_RENAMES = (
    ("cond_type_embed", "cond_type_embedding"),
    ("context_embedder.proj_in", "txt_in.input_embedder"),
    ("context_embedder.time_text_embed.text_embedder.linear_1", "txt_in.c_embedder.linear_1"),
    ("context_embedder.time_text_embed.text_embedder.linear_2", "txt_in.c_embedder.linear_2"),
    ("context_embedder.time_text_embed.timestep_embedder.linear_1", "txt_in.t_embedder.mlp.0"),
    ("context_embedder.time_text_embed.timestep_embedder.linear_2", "txt_in.t_embedder.mlp.2"),
    (
        "context_embedder.token_refiner.refiner_blocks.{}.attn.to_k",
        "txt_in.individual_token_refiner.blocks.{}.self_attn_qkv",
    ),
    (
        "context_embedder.token_refiner.refiner_blocks.{}.attn.to_out.0",
        "txt_in.individual_token_refiner.blocks.{}.self_attn_proj",
    ),
    (
        "context_embedder.token_refiner.refiner_blocks.{}.attn.to_q",
        "txt_in.individual_token_refiner.blocks.{}.self_attn_qkv",
    ),
    (
        "context_embedder.token_refiner.refiner_blocks.{}.attn.to_v",
        "txt_in.individual_token_refiner.blocks.{}.self_attn_qkv",
    ),
    (
        "context_embedder.token_refiner.refiner_blocks.{}.ff.net.0.proj",
        "txt_in.individual_token_refiner.blocks.{}.mlp.fc1",
    ),
    ("context_embedder.token_refiner.refiner_blocks.{}.ff.net.2", "txt_in.individual_token_refiner.blocks.{}.mlp.fc2"),
    (
        "context_embedder.token_refiner.refiner_blocks.{}.norm_out.linear",
        "txt_in.individual_token_refiner.blocks.{}.adaLN_modulation.1",
    ),
    ("context_embedder_2.linear_1", "byt5_in.fc1"),
    ("context_embedder_2.linear_2", "byt5_in.fc2"),
    ("context_embedder_2.linear_3", "byt5_in.fc3"),
    ("image_embedder.linear_1", "vision_in.proj.1"),
    ("image_embedder.linear_2", "vision_in.proj.3"),
    ("norm_out.linear", "final_layer.adaLN_modulation.1"),
    ("proj_out", "final_layer.linear"),
    ("time_embed.timestep_embedder.linear_1", "time_in.mlp.0"),
    ("time_embed.timestep_embedder.linear_2", "time_in.mlp.2"),
    ("transformer_blocks.{}.attn.add_k_proj", "double_blocks.{}.txt_attn_qkv"),
    ("transformer_blocks.{}.attn.add_q_proj", "double_blocks.{}.txt_attn_qkv"),
    ("transformer_blocks.{}.attn.add_v_proj", "double_blocks.{}.txt_attn_qkv"),
    ("transformer_blocks.{}.attn.to_add_out", "double_blocks.{}.txt_attn_proj"),
    ("transformer_blocks.{}.attn.to_k", "double_blocks.{}.img_attn_qkv"),
    ("transformer_blocks.{}.attn.to_out.0", "double_blocks.{}.img_attn_proj"),
    ("transformer_blocks.{}.attn.to_q", "double_blocks.{}.img_attn_qkv"),
    ("transformer_blocks.{}.attn.to_v", "double_blocks.{}.img_attn_qkv"),
    ("transformer_blocks.{}.ff.net.0.proj", "double_blocks.{}.img_mlp.fc1"),
    ("transformer_blocks.{}.ff.net.2", "double_blocks.{}.img_mlp.fc2"),
    ("transformer_blocks.{}.ff_context.net.0.proj", "double_blocks.{}.txt_mlp.fc1"),
    ("transformer_blocks.{}.ff_context.net.2", "double_blocks.{}.txt_mlp.fc2"),
    ("transformer_blocks.{}.norm1.linear", "double_blocks.{}.img_mod.linear"),
    ("transformer_blocks.{}.norm1_context.linear", "double_blocks.{}.txt_mod.linear"),
)
# end of derived renames


FAMILY = Family(
    "hunyuan-video-1.5", "dit",
    DetectionRule(("cond_type_embedding.weight",), "ours (ComfyUI: use_cond_type_embedding)",
                  "img_in.proj.weight", ("double_blocks.", "single_blocks."), ("vision_in.proj.0.weight",)),
    presets=PRESETS, edge_blocks=r"^double_blocks\.(\d+)\.",
    shared_inputs=(SharedInput(".*", ("img_attn_q", "img_attn_k", "img_attn_v")),  # q/k/v stored apart
                   SharedInput(".*", ("txt_attn_q", "txt_attn_k", "txt_attn_v"))),
    inventories=(("hunyuan-video-1.5", t2v_720p),),
    model=ModelCode(config, model_class, convert, inputs, value_sources),
    diffusers_renames=DIFFUSERS_RENAMES)
