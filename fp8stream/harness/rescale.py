"""Function-preserving rescalings of the tiny Flux DiT: the same function, inputs of chosen
linears made larger, so scale sources are judged on ranges real DiTs have.

* ``rescale_tiny_flux`` (k): every AdaLN-modulated input k times larger (issue 4);
* ``split_linear2`` (k): the attention half of each single block's ``linear2`` input k times its
  MLP half (v rows of ``linear1`` times k, the matching ``linear2`` columns over k);
* ``outlier_channels`` (k): a few channels k times larger, made through the AdaLN modulation
  rows (modulated inputs of qkv/MLP-up/linear1) and the V projections (attention outputs),
  compensated in the columns of the weights that read them.

Each works on a ComfyUI-named state dict (returns a new one); ``variant`` builds a rescaled copy
of a loaded model by name.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from fp8stream.harness import flux
from fp8stream.harness.dit import TinyDiT
from fp8stream.harness.names import from_comfy, to_comfy

OUTLIER_CHANNELS = (5, 37)  # of the 64 hidden channels: heads 0 and 2


def _modulated(cfg: Mapping, include_final: bool) -> list[tuple[str, list[tuple[int, int]], list[str]]]:
    """(modulation layer, its (shift chunk, scale chunk) index pairs, consumer layers) in ComfyUI names."""
    out = []
    for i in range(cfg["num_layers"]):
        for s in ("img", "txt"):
            c = f"double_blocks.{i}.{s}_"
            # chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
            out.append((c + "mod.lin", [(0, 1), (3, 4)], [c + "attn.qkv", c + "mlp.0"]))
    for i in range(cfg["num_single_layers"]):
        # chunks: shift, scale, gate
        out.append((f"single_blocks.{i}.modulation.lin", [(0, 1)], [f"single_blocks.{i}.linear1"]))
    if include_final:
        # ComfyUI order (shift, scale); the diffusers side swaps it.
        out.append(("final_layer.adaLN_modulation.1", [(0, 1)], ["final_layer.linear"]))
    return out


def _scale_modulation(sd: dict, cfg: Mapping, k: float, channels: Sequence[int] | None, include_final: bool) -> None:
    """x_mod = LN(h)*(1+scale) + shift -> k*x_mod on ``channels`` (all when None): shift' =
    k*shift, scale' = k*scale + (k-1); each consumer's weight columns over k (bias unchanged)."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    idx = torch.arange(d) if channels is None else torch.tensor(list(channels))
    for mod, pairs, consumers in _modulated(cfg, include_final):
        w, b = sd[mod + ".weight"], sd[mod + ".bias"]
        for shift, scale in pairs:
            for c in (shift, scale):
                w[c * d + idx] *= k
                b[c * d + idx] *= k
            b[scale * d + idx] += k - 1
        for c in consumers:
            sd[c + ".weight"][:, idx] /= k


def rescale_tiny_flux(model_or_state: nn.Module | Mapping[str, torch.Tensor], k: float,
                      cfg: Mapping | None = None, include_final: bool = True):
    """Scale AdaLN's shift and ``1 + scale`` by k and the weights that read them by 1/k.

    Consumers: img/txt qkv and MLP-up of the double blocks, linear1 of the single blocks and,
    with ``include_final``, the final layer. Takes a ComfyUI-named state dict (returns a new
    one) or a diffusers model (rescaled in place, returned).
    """
    if isinstance(model_or_state, nn.Module):
        model = model_or_state
        cfg = dict(cfg or model.config)
        sd = to_comfy(flux, model.state_dict(), cfg)
        model.load_state_dict(from_comfy(flux, rescale_tiny_flux(sd, k, cfg, include_final), cfg))
        return model
    cfg = cfg or flux.DEFAULT_CONFIG
    sd = {n: t.clone() for n, t in model_or_state.items()}
    _scale_modulation(sd, cfg, k, None, include_final)
    return sd


def _scale_v(sd: dict, qkv: str, proj: str, d: int, k: float, idx: torch.Tensor) -> None:
    """V rows ``idx`` of a fused q|k|v layer times k; the reading projection's columns over k."""
    sd[qkv + ".weight"][2 * d + idx] *= k
    sd[qkv + ".bias"][2 * d + idx] *= k
    sd[proj + ".weight"][:, idx] /= k


def split_linear2(state: Mapping[str, torch.Tensor], k: float, cfg: Mapping) -> dict[str, torch.Tensor]:
    """Each single block's attention output (first d inputs of ``linear2``) k times larger."""
    sd = {n: t.clone() for n, t in state.items()}
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    for i in range(cfg["num_single_layers"]):
        b = f"single_blocks.{i}."
        _scale_v(sd, b + "linear1", b + "linear2", d, k, torch.arange(d))
    return sd


def outlier_channels(state: Mapping[str, torch.Tensor], k: float, cfg: Mapping,
                     channels: Sequence[int] = OUTLIER_CHANNELS) -> dict[str, torch.Tensor]:
    """``channels`` k times larger in every modulated input and every attention output.

    Joint attention mixes the img and txt streams' V, so both streams' V rows are scaled and
    both output projections compensate."""
    sd = {n: t.clone() for n, t in state.items()}
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    idx = torch.tensor(list(channels))
    _scale_modulation(sd, cfg, k, channels, include_final=False)
    for i in range(cfg["num_layers"]):
        for s in ("img", "txt"):
            c = f"double_blocks.{i}.{s}_attn."
            _scale_v(sd, c + "qkv", c + "proj", d, k, idx)
    for i in range(cfg["num_single_layers"]):
        b = f"single_blocks.{i}."
        _scale_v(sd, b + "linear1", b + "linear2", d, k, idx)
    return sd


def rescaled_copy(tf: TinyDiT, k: float, include_final: bool = True) -> TinyDiT:
    """A copy of the DiT rescaled by k (``rescale_tiny_flux``); ``tf`` is left untouched."""
    model = copy.deepcopy(tf.model)
    rescale_tiny_flux(model, k, tf.config, include_final)
    return TinyDiT(model, tf.cond, tf.config, tf.family)


VARIANTS = {
    "split256": lambda sd, cfg: split_linear2(sd, 256.0, cfg),
    "outlier50": lambda sd, cfg: outlier_channels(sd, 50.0, cfg),
}


def variant(tf: TinyDiT, name: str) -> TinyDiT:
    """A rescaled copy of the tiny Flux by name: ``k<number>`` or one of ``VARIANTS``."""
    if name.startswith("k"):
        return tf if float(name[1:]) == 1 else rescaled_copy(tf, float(name[1:]))
    sd = VARIANTS[name](to_comfy(flux, tf.model.state_dict(), tf.config), tf.config)
    model = copy.deepcopy(tf.model)
    model.load_state_dict(from_comfy(flux, sd, tf.config))
    return TinyDiT(model, tf.cond, tf.config, tf.family)
