"""HunyuanVideo 1.5 (Tencent / ComfyUI names: double_blocks.N.img_attn_qkv, img_mod.linear,
txt_in.individual_token_refiner, byt5_in, vision_in, cond_type_embedding, ...).

diffusers has no single-file converter for 1.5. Its blocks carry HunyuanVideo 1.0's names, so
diffusers' 1.0 converter (`convert_hunyuan_video_transformer_to_diffusers`) maps them; the parts
1.0 lacks are mapped here (ours, from diffusers' conversion script for the original weights):
the ByT5 glyph-text projection, the SigLIP image projection, the condition-type embedding, the
MeanFlow second timestep embedder, and q/k/v stored apart (the original release) instead of
fused (ComfyUI's repack). The 1.0 converter hard-codes no width these blocks use.

diffusers' HunyuanVideo15Transformer3DModel takes the timestep in [0, 1000]. Its latent input
concatenates the noisy latent, the conditioning latent and a 1-channel frame mask (65 = 32 + 32
+ 1); every synthetic sample is image-conditioned (first frame given, SigLIP features of 729
tokens): with zero image features the whole batch would skip the image branch, which then
never runs.
"""

from __future__ import annotations

from typing import Mapping

import torch

from fp8stream.families.detect import count_blocks
from fp8stream.forward.families import joint_value_sources, rename_prefixes
from fp8stream.forward.families.flux import rope_axes
from fp8stream.forward.inputs import SamplePlan, grid

NAME = "hunyuan-video-1.5"
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
    out = joint_value_sources(cfg["num_layers"])
    for i in range(cfg["num_refiner_layers"]):
        a = f"context_embedder.token_refiner.refiner_blocks.{i}.attn."
        out[a + "to_out.0"] = [[a + "to_v"]]
    return out
