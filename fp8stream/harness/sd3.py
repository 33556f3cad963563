"""The tiny SD3-architecture MMDiT (``diffusers.SD3Transformer2DModel``) under the original
SD3/MMDiT key names ComfyUI's files use (``joint_blocks.N.x_block.attn.qkv`` ...): the inverse of
diffusers' ``convert_sd3_transformer_checkpoint_to_diffusers``. The last joint block is
context-pre-only (no context proj/MLP) and its context modulation, like the final layer's,
stores (shift, scale) where diffusers' AdaLayerNormContinuous has (scale, shift).

Images: one 8x8 digit channel, 2x2 patches (SD3's patch embedding) -> 16 tokens; the
timestep goes in as t·1000 (SD3 takes 0-1000).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from fp8stream.harness.digits import pack, unpack
from fp8stream.harness.names import Attention, LinearMap, Modulation

NAME = "sd3"
DEFAULT_CONFIG: dict = {
    "sample_size": 8,
    "patch_size": 2,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 3,
    "attention_head_dim": 16,
    "num_attention_heads": 4,
    "joint_attention_dim": 32,
    "caption_projection_dim": 64,
    "pooled_projection_dim": 32,
    "pos_embed_max_size": 4,
    "qk_norm": "rms_norm",  # SD3.5's q/k RMSNorm (ln_q / ln_k in the file)
}


def _block(i: int, last: bool) -> list[LinearMap]:
    c, d = f"joint_blocks.{i}.", f"transformer_blocks.{i}."
    m = [
        LinearMap(c + "x_block.attn.qkv", (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v")),
        LinearMap(c + "context_block.attn.qkv", (d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj")),
        LinearMap(c + "x_block.attn.proj", (d + "attn.to_out.0",)),
        LinearMap(c + "x_block.adaLN_modulation.1", (d + "norm1.linear",)),
        LinearMap(c + "context_block.adaLN_modulation.1", (d + "norm1_context.linear",), swap_halves=last),
        LinearMap(c + "x_block.mlp.fc1", (d + "ff.net.0.proj",)),
        LinearMap(c + "x_block.mlp.fc2", (d + "ff.net.2",)),
    ]
    if not last:
        m += [
            LinearMap(c + "context_block.attn.proj", (d + "attn.to_add_out",)),
            LinearMap(c + "context_block.mlp.fc1", (d + "ff_context.net.0.proj",)),
            LinearMap(c + "context_block.mlp.fc2", (d + "ff_context.net.2",)),
        ]
    return m


def linear_maps(cfg: Mapping) -> list[LinearMap]:
    """Every linear layer, original (ComfyUI) name -> diffusers module names."""
    m = [
        LinearMap("t_embedder.mlp.0", ("time_text_embed.timestep_embedder.linear_1",)),
        LinearMap("t_embedder.mlp.2", ("time_text_embed.timestep_embedder.linear_2",)),
        LinearMap("y_embedder.mlp.0", ("time_text_embed.text_embedder.linear_1",)),
        LinearMap("y_embedder.mlp.2", ("time_text_embed.text_embedder.linear_2",)),
        LinearMap("context_embedder", ("context_embedder",)),
    ]
    n = cfg["num_layers"]
    for i in range(n):
        m += _block(i, i == n - 1)
    m += [
        LinearMap("final_layer.linear", ("proj_out",)),
        LinearMap("final_layer.adaLN_modulation.1", ("norm_out.linear",), swap_halves=True),
    ]
    return m


def modulations(cfg: Mapping, include_final: bool) -> list[Modulation]:
    """Every AdaLN modulation and the layers reading its modulated inputs; the final layer's
    with ``include_final``. Chunks (ComfyUI's and diffusers' AdaLayerNormZero): shift_msa,
    scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp; the context-pre-only block's context
    modulation has (shift, scale) alone, for its qkv (no MLP)."""
    n, out = cfg["num_layers"], []
    for i in range(n):
        c = f"joint_blocks.{i}."
        for s in ("x_block", "context_block"):
            if s == "context_block" and i == n - 1:
                out.append(Modulation(c + s + ".adaLN_modulation.1", ((0, 1),), (c + s + ".attn.qkv",)))
            else:
                out.append(Modulation(c + s + ".adaLN_modulation.1", ((0, 1), (3, 4)),
                                      (c + s + ".attn.qkv", c + s + ".mlp.fc1")))
    if include_final:
        out.append(Modulation("final_layer.adaLN_modulation.1", ((0, 1),), ("final_layer.linear",)))
    return out


def attentions(cfg: Mapping) -> list[Attention]:
    """Both streams of every joint block; the last block drops its context output (no proj)."""
    n, out = cfg["num_layers"], []
    for i in range(n):
        c = f"joint_blocks.{i}."
        out.append(Attention(c + "x_block.attn.qkv", c + "x_block.attn.proj"))
        out.append(Attention(c + "context_block.attn.qkv", None if i == n - 1 else c + "context_block.attn.proj"))
    return out


def other_maps(cfg: Mapping) -> list[tuple[str, str]]:
    """Non-linear tensors: (original key, diffusers key)."""
    out = [("pos_embed", "pos_embed.pos_embed"), ("x_embedder.proj.weight", "pos_embed.proj.weight"),
           ("x_embedder.proj.bias", "pos_embed.proj.bias")]
    if cfg.get("qk_norm"):
        for i in range(cfg["num_layers"]):
            c, d = f"joint_blocks.{i}.", f"transformer_blocks.{i}.attn."
            out += [(c + "x_block.attn.ln_q.weight", d + "norm_q.weight"),
                    (c + "x_block.attn.ln_k.weight", d + "norm_k.weight"),
                    (c + "context_block.attn.ln_q.weight", d + "norm_added_q.weight"),
                    (c + "context_block.attn.ln_k.weight", d + "norm_added_k.weight")]
    return out


def cond_dims(cfg: Mapping) -> tuple[int, int]:
    return cfg["joint_attention_dim"], cfg["pooled_projection_dim"]


def make_model(cfg: Mapping | None = None) -> nn.Module:
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(**dict(cfg or DEFAULT_CONFIG))


def forward(model: nn.Module, cond: nn.Module, x: torch.Tensor, t: torch.Tensor,
            labels: torch.Tensor, guidance: torch.Tensor | float | None = None) -> torch.Tensor:
    """Velocity for tokens ``x`` [N,16,4] at ``t`` [N] in [0, 1] (1 = noise); no guidance input."""
    txt, pooled = cond(labels)
    out = model(hidden_states=unpack(x)[:, None], encoder_hidden_states=txt, pooled_projections=pooled,
                timestep=t * 1000.0, return_dict=False)[0]
    return pack(out[:, 0])
