"""The tiny Wan-architecture model (``diffusers.WanTransformer3DModel``) on 1-frame "videos",
under Wan's original key names ComfyUI's files use (``blocks.N.self_attn.q`` ...): the inverse of
diffusers' ``convert_wan_transformer_to_diffusers`` (a pure rename; note that diffusers'
``norm2``, the cross-attention norm, is the original ``norm3``).

Images: [N, 1 channel, 1 frame, 8, 8] with (1, 2, 2) patches -> 16 tokens; text states from
the class conditioning (Wan has no pooled vector); the timestep goes in as t·1000.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from fp8stream.harness.digits import pack, unpack
from fp8stream.harness.names import LinearMap

NAME = "wan"
DEFAULT_CONFIG: dict = {
    "patch_size": [1, 2, 2],
    "num_attention_heads": 4,
    "attention_head_dim": 16,
    "in_channels": 1,
    "out_channels": 1,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 128,
    "num_layers": 3,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}
_ATTN = (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))


def linear_maps(cfg: Mapping) -> list[LinearMap]:
    """Every linear layer, original (ComfyUI) name -> diffusers module name."""
    e = "condition_embedder."
    m = [
        LinearMap("text_embedding.0", (e + "text_embedder.linear_1",)),
        LinearMap("text_embedding.2", (e + "text_embedder.linear_2",)),
        LinearMap("time_embedding.0", (e + "time_embedder.linear_1",)),
        LinearMap("time_embedding.2", (e + "time_embedder.linear_2",)),
        LinearMap("time_projection.1", (e + "time_proj",)),
    ]
    for i in range(cfg["num_layers"]):
        c, d = f"blocks.{i}.", f"blocks.{i}."
        for orig, diff in (("self_attn", "attn1"), ("cross_attn", "attn2")):
            m += [LinearMap(f"{c}{orig}.{o}", (f"{d}{diff}.{n}",)) for o, n in _ATTN]
        m += [LinearMap(c + "ffn.0", (d + "ffn.net.0.proj",)), LinearMap(c + "ffn.2", (d + "ffn.net.2",))]
    return m + [LinearMap("head.head", ("proj_out",))]


def other_maps(cfg: Mapping) -> list[tuple[str, str]]:
    """Non-linear tensors: (original key, diffusers key)."""
    out = [("patch_embedding.weight", "patch_embedding.weight"), ("patch_embedding.bias", "patch_embedding.bias"),
           ("head.modulation", "scale_shift_table")]
    for i in range(cfg["num_layers"]):
        b = f"blocks.{i}."
        out.append((b + "modulation", b + "scale_shift_table"))
        for orig, diff in (("self_attn", "attn1"), ("cross_attn", "attn2")):
            out += [(f"{b}{orig}.norm_{x}.weight", f"{b}{diff}.norm_{x}.weight") for x in ("q", "k")]
        if cfg.get("cross_attn_norm"):
            out += [(b + "norm3.weight", b + "norm2.weight"), (b + "norm3.bias", b + "norm2.bias")]
    return out


def cond_dims(cfg: Mapping) -> tuple[int, int]:
    return cfg["text_dim"], 0


def make_model(cfg: Mapping | None = None) -> nn.Module:
    from diffusers import WanTransformer3DModel

    cfg = dict(cfg or DEFAULT_CONFIG)
    cfg["patch_size"] = tuple(cfg["patch_size"])
    return WanTransformer3DModel(**cfg)


def forward(model: nn.Module, cond: nn.Module, x: torch.Tensor, t: torch.Tensor,
            labels: torch.Tensor, guidance: torch.Tensor | float | None = None) -> torch.Tensor:
    """Velocity for tokens ``x`` [N,16,4] at ``t`` [N] in [0, 1] (1 = noise); no guidance input."""
    txt, _ = cond(labels)
    out = model(hidden_states=unpack(x)[:, None, None], encoder_hidden_states=txt, timestep=t * 1000.0,
                return_dict=False)[0]
    return pack(out[:, 0, 0])
