"""The tiny Flux-architecture DiT (``diffusers.FluxTransformer2DModel``) under ComfyUI's (BFL)
key names.

Names follow diffusers' scripts/convert_flux_to_diffusers.py and its single-file loader:
q, k, v fused in that order along dim 0 (img_attn.qkv, txt_attn.qkv); single_blocks.N.linear1
= cat(q, k, v, mlp); block modulations keep BFL's chunk order (shift, scale, gate[, ...]), which
diffusers' AdaLayerNormZero(Single) also use; only final_layer.adaLN_modulation.1 differs (BFL
(shift, scale), diffusers' norm_out (scale, shift)), so its halves are swapped.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from fp8stream.harness.names import Attention, LinearMap, Modulation

NAME = "flux"
# Inner dim 64 = 4 heads x 16; rope axes must sum to the head dim. Images are 8x8 digits
# packed 2x2 into 16 tokens of 4 channels, the way Flux packs 16-channel latents into 64.
DEFAULT_CONFIG: dict = {
    "patch_size": 1,
    "in_channels": 4,
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 4,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "guidance_embeds": True,
    "axes_dims_rope": [4, 6, 6],
}
SAMPLE_GUIDANCE = 3.5


def _double_block(i: int) -> list[LinearMap]:
    c, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
    return [
        LinearMap(c + "img_mod.lin", (d + "norm1.linear",)),
        LinearMap(c + "txt_mod.lin", (d + "norm1_context.linear",)),
        LinearMap(c + "img_attn.qkv", (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v")),
        LinearMap(c + "txt_attn.qkv", (d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj")),
        LinearMap(c + "img_attn.proj", (d + "attn.to_out.0",)),
        LinearMap(c + "txt_attn.proj", (d + "attn.to_add_out",)),
        LinearMap(c + "img_mlp.0", (d + "ff.net.0.proj",)),
        LinearMap(c + "img_mlp.2", (d + "ff.net.2",)),
        LinearMap(c + "txt_mlp.0", (d + "ff_context.net.0.proj",)),
        LinearMap(c + "txt_mlp.2", (d + "ff_context.net.2",)),
    ]


def linear_maps(cfg: Mapping) -> list[LinearMap]:
    """Every linear layer of a Flux transformer, ComfyUI name -> diffusers module names."""
    m = [
        LinearMap("img_in", ("x_embedder",)),
        LinearMap("txt_in", ("context_embedder",)),
        LinearMap("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",)),
        LinearMap("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",)),
        LinearMap("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",)),
        LinearMap("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",)),
    ]
    if cfg.get("guidance_embeds", False):
        m += [
            LinearMap("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",)),
            LinearMap("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",)),
        ]
    for i in range(cfg["num_layers"]):
        m += _double_block(i)
    for i in range(cfg["num_single_layers"]):
        c, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        m += [
            LinearMap(c + "modulation.lin", (d + "norm.linear",)),
            LinearMap(c + "linear1", (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp")),
            LinearMap(c + "linear2", (d + "proj_out",)),
        ]
    m += [
        LinearMap("final_layer.linear", ("proj_out",)),
        LinearMap("final_layer.adaLN_modulation.1", ("norm_out.linear",), swap_halves=True),
    ]
    return m


def modulations(cfg: Mapping, include_final: bool) -> list[Modulation]:
    """Every AdaLN modulation and the layers reading its modulated inputs; the final layer's
    with ``include_final``."""
    out = []
    for i in range(cfg["num_layers"]):
        for s in ("img", "txt"):
            c = f"double_blocks.{i}.{s}_"
            # chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
            out.append(Modulation(c + "mod.lin", ((0, 1), (3, 4)), (c + "attn.qkv", c + "mlp.0")))
    for i in range(cfg["num_single_layers"]):
        # chunks: shift, scale, gate
        out.append(Modulation(f"single_blocks.{i}.modulation.lin", ((0, 1),), (f"single_blocks.{i}.linear1",)))
    if include_final:
        # ComfyUI order (shift, scale); the diffusers side swaps it.
        out.append(Modulation("final_layer.adaLN_modulation.1", ((0, 1),), ("final_layer.linear",)))
    return out


def attentions(cfg: Mapping) -> list[Attention]:
    """Every attention: both streams of the double blocks (joint), the single blocks' linear1
    (q|k|v|mlp) read by linear2."""
    out = []
    for i in range(cfg["num_layers"]):
        for s in ("img", "txt"):
            c = f"double_blocks.{i}.{s}_attn."
            out.append(Attention(c + "qkv", c + "proj"))
    for i in range(cfg["num_single_layers"]):
        out.append(Attention(f"single_blocks.{i}.linear1", f"single_blocks.{i}.linear2"))
    return out


def other_maps(cfg: Mapping) -> list[tuple[str, str]]:
    """The RMSNorm scales of the q/k norms: (ComfyUI key, diffusers key)."""
    out = []
    for i in range(cfg["num_layers"]):
        c, d = f"double_blocks.{i}.", f"transformer_blocks.{i}.attn."
        out += [
            (c + "img_attn.norm.query_norm.scale", d + "norm_q.weight"),
            (c + "img_attn.norm.key_norm.scale", d + "norm_k.weight"),
            (c + "txt_attn.norm.query_norm.scale", d + "norm_added_q.weight"),
            (c + "txt_attn.norm.key_norm.scale", d + "norm_added_k.weight"),
        ]
    for i in range(cfg["num_single_layers"]):
        c, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}.attn."
        out += [(c + "norm.query_norm.scale", d + "norm_q.weight"), (c + "norm.key_norm.scale", d + "norm_k.weight")]
    return out


def cond_dims(cfg: Mapping) -> tuple[int, int]:
    return cfg["joint_attention_dim"], cfg["pooled_projection_dim"]


def make_model(cfg: Mapping | None = None) -> nn.Module:
    from diffusers import FluxTransformer2DModel

    cfg = dict(cfg or DEFAULT_CONFIG)
    cfg["axes_dims_rope"] = tuple(cfg["axes_dims_rope"])
    return FluxTransformer2DModel(**cfg)


def image_ids() -> torch.Tensor:
    """Flux's (0, row, col) position ids of the 4x4 token grid."""
    ids = torch.zeros(4, 4, 3)
    ids[..., 1] = torch.arange(4)[:, None]
    ids[..., 2] = torch.arange(4)[None, :]
    return ids.reshape(16, 3)


def forward(model: nn.Module, cond: nn.Module, x: torch.Tensor, t: torch.Tensor,
            labels: torch.Tensor, guidance: torch.Tensor | float = SAMPLE_GUIDANCE) -> torch.Tensor:
    """Velocity prediction for tokens ``x`` [N,16,4] at times ``t`` [N] in [0, 1] (1 = noise)."""
    n = x.shape[0]
    txt, pooled = cond(labels)
    g = guidance if isinstance(guidance, torch.Tensor) else torch.full((n,), float(guidance))
    return model(
        hidden_states=x,
        encoder_hidden_states=txt,
        pooled_projections=pooled,
        timestep=t,  # the model multiplies by 1000 itself
        img_ids=image_ids(),
        txt_ids=torch.zeros(txt.shape[1], 3),
        guidance=g,
        return_dict=False,
    )[0]
