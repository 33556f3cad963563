"""Function-preserving rescalings of the tiny DiTs with AdaLN modulation (Flux, SD3): the same
function, inputs of chosen linears made larger, so scale sources are judged on ranges real DiTs
have.

* ``rescale_modulated`` (k): every AdaLN-modulated input k times larger (issue 4;
  ``rescale_tiny_flux`` on the Flux);
* ``split_linear2`` (k, Flux): the attention half of each single block's ``linear2`` input k
  times its MLP half (v rows of ``linear1`` times k, the matching ``linear2`` columns over k);
* ``outlier_channels`` (k): a few channels k times larger, made through the AdaLN modulation
  rows (modulated inputs of every qkv / MLP-up / linear1) and the V projections (attention
  outputs), compensated in the columns of the weights that read them.

Where a family's modulations and attentions sit (ComfyUI names, chunk order) is its module's
``modulations`` / ``attentions``. Each works on a ComfyUI-named state dict (returns a new one);
``variant`` builds a rescaled copy of a loaded model by name.
"""

from __future__ import annotations

import copy
from types import ModuleType
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from fp8stream.harness import flux
from fp8stream.harness.dit import TinyDiT, comfy_state
from fp8stream.harness.names import Attention, Modulation, from_comfy, to_comfy

OUTLIER_CHANNELS = (5, 37)  # of the 64 hidden channels: heads 0 and 2
RESCALABLE = ("flux", "sd3")  # the families whose modules give modulations() and attentions()


def _inner(cfg: Mapping) -> int:
    return cfg["num_attention_heads"] * cfg["attention_head_dim"]


def _scale_modulation(sd: dict, mods: Sequence[Modulation], d: int, k: float, channels: Sequence[int] | None) -> None:
    """x_mod = LN(h)*(1+scale) + shift -> k*x_mod on ``channels`` (all when None): shift' =
    k*shift, scale' = k*scale + (k-1); each consumer's weight columns over k (bias unchanged)."""
    idx = torch.arange(d) if channels is None else torch.tensor(list(channels))
    for m in mods:
        w, b = sd[m.layer + ".weight"], sd[m.layer + ".bias"]
        for shift, scale in m.pairs:
            for c in (shift, scale):
                w[c * d + idx] *= k
                b[c * d + idx] *= k
            b[scale * d + idx] += k - 1
        for c in m.consumers:
            sd[c + ".weight"][:, idx] /= k


def _scale_v(sd: dict, att: Attention, d: int, k: float, idx: torch.Tensor) -> None:
    """V rows ``idx`` of a fused q|k|v(|mlp) layer times k; the reading projection's columns over k."""
    sd[att.qkv + ".weight"][2 * d + idx] *= k
    sd[att.qkv + ".bias"][2 * d + idx] *= k
    if att.proj is not None:
        sd[att.proj + ".weight"][:, idx] /= k


def rescale_modulated(state: Mapping[str, torch.Tensor], k: float, fam: ModuleType, cfg: Mapping,
                      include_final: bool = True) -> dict[str, torch.Tensor]:
    """Every AdaLN-modulated input of family ``fam`` k times larger (the final layer's with
    ``include_final``): shift and ``1 + scale`` times k, the weights that read them over k."""
    sd = {n: t.clone() for n, t in state.items()}
    _scale_modulation(sd, fam.modulations(cfg, include_final), _inner(cfg), k, None)
    return sd


def rescale_tiny_flux(model_or_state: nn.Module | Mapping[str, torch.Tensor], k: float,
                      cfg: Mapping | None = None, include_final: bool = True):
    """``rescale_modulated`` on the Flux. Consumers: img/txt qkv and MLP-up of the double blocks,
    linear1 of the single blocks and, with ``include_final``, the final layer. Takes a
    ComfyUI-named state dict (returns a new one) or a diffusers model (rescaled in place, returned).
    """
    if isinstance(model_or_state, nn.Module):
        model = model_or_state
        cfg = dict(cfg or model.config)
        sd = to_comfy(flux, model.state_dict(), cfg)
        model.load_state_dict(from_comfy(flux, rescale_modulated(sd, k, flux, cfg, include_final), cfg))
        return model
    return rescale_modulated(model_or_state, k, flux, cfg or flux.DEFAULT_CONFIG, include_final)


def split_linear2(state: Mapping[str, torch.Tensor], k: float, cfg: Mapping) -> dict[str, torch.Tensor]:
    """Each Flux single block's attention output (first d inputs of ``linear2``) k times larger."""
    sd = {n: t.clone() for n, t in state.items()}
    d = _inner(cfg)
    for i in range(cfg["num_single_layers"]):
        b = f"single_blocks.{i}."
        _scale_v(sd, Attention(b + "linear1", b + "linear2"), d, k, torch.arange(d))
    return sd


def outlier_channels(state: Mapping[str, torch.Tensor], k: float, cfg: Mapping,
                     channels: Sequence[int] = OUTLIER_CHANNELS, fam: ModuleType = flux) -> dict[str, torch.Tensor]:
    """``channels`` k times larger in every block's modulated input and every attention output.

    Joint attention mixes both streams' V, so both streams' V rows are scaled and both output
    projections compensate (a stream whose output is dropped has none to)."""
    sd = {n: t.clone() for n, t in state.items()}
    d, idx = _inner(cfg), torch.tensor(list(channels))
    _scale_modulation(sd, fam.modulations(cfg, False), d, k, channels)
    for att in fam.attentions(cfg):
        _scale_v(sd, att, d, k, idx)
    return sd


def _with_state(tf: TinyDiT, sd: Mapping[str, torch.Tensor]) -> TinyDiT:
    """A copy of the DiT with ComfyUI-named weights ``sd``; ``tf`` is left untouched."""
    model = copy.deepcopy(tf.model)
    model.load_state_dict(from_comfy(tf.fam, sd, tf.config))
    return TinyDiT(model, tf.cond, tf.config, tf.family)


def rescaled_copy(tf: TinyDiT, k: float, include_final: bool = True) -> TinyDiT:
    """A copy of the DiT rescaled by k (``rescale_modulated``); ``tf`` is left untouched."""
    return _with_state(tf, rescale_modulated(comfy_state(tf), k, tf.fam, tf.config, include_final))


# name -> (the families it applies to, (ComfyUI state, family module, config) -> rescaled state)
VARIANTS: dict[str, tuple[tuple[str, ...], Callable[[Mapping, ModuleType, Mapping], dict]]] = {
    "split256": (("flux",), lambda sd, fam, cfg: split_linear2(sd, 256.0, cfg)),
    "outlier50": (RESCALABLE, lambda sd, fam, cfg: outlier_channels(sd, 50.0, cfg, fam=fam)),
}


def variant(tf: TinyDiT, name: str) -> TinyDiT:
    """A rescaled copy of a tiny DiT by name: ``k<number>`` or one of ``VARIANTS``."""
    families = RESCALABLE if name.startswith("k") else VARIANTS[name][0]
    if tf.family not in families:
        raise ValueError(f"no {name} variant of the tiny {tf.family} (only {', '.join(families)})")
    if name.startswith("k"):
        return tf if float(name[1:]) == 1 else rescaled_copy(tf, float(name[1:]))
    return _with_state(tf, VARIANTS[name][1](comfy_state(tf), tf.fam, tf.config))
