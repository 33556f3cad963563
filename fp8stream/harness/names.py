"""ComfyUI layer names <-> diffusers module names: one fused ComfyUI linear (q|k|v, Flux's
linear1) is the row-concatenation of diffusers linears; a few modulations store their two
halves in the other order (shift, scale vs scale, shift). ``Modulation`` and ``Attention`` say
where a family's AdaLN modulation and attention sit, under ComfyUI names (``rescale`` acts on
them)."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn


@dataclass(frozen=True)
class LinearMap:
    """One ComfyUI linear layer and the diffusers linears it is made of (rows in order)."""

    comfy: str
    parts: tuple[str, ...]
    swap_halves: bool = False  # (shift, scale) in the file, (scale, shift) in diffusers


@dataclass(frozen=True)
class Modulation:
    """An AdaLN modulation layer in ComfyUI's chunk order: the (shift, scale) chunk pairs of its
    output that modulate a normalized input (x * (1 + scale) + shift), and the layers reading
    those inputs."""

    layer: str
    pairs: tuple[tuple[int, int], ...]
    consumers: tuple[str, ...]


@dataclass(frozen=True)
class Attention:
    """One stream's attention: its fused q|k|v layer (V rows third) and the projection that reads
    its attention output (None where the block drops that stream's output)."""

    qkv: str
    proj: str | None


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def fuse(sd: Mapping[str, torch.Tensor], maps: Sequence[LinearMap],
         others: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """A diffusers state dict under ComfyUI names: linears fused by ``maps``, ``others`` =
    (ComfyUI key, diffusers key) renamed. Every diffusers key must be used."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for lm in maps:
        for suffix in ("weight", "bias"):
            keys = [f"{p}.{suffix}" for p in lm.parts]
            t = torch.cat([sd[k] for k in keys], dim=0)
            out[f"{lm.comfy}.{suffix}"] = swap_halves(t) if lm.swap_halves else t
            used |= set(keys)
    for ck, dk in others:
        out[ck] = sd[dk]
        used.add(dk)
    if set(sd) != used:
        raise KeyError(f"diffusers keys not mapped: {sorted(set(sd) - used)}")
    return {k: v.contiguous() for k, v in out.items()}


def split(sd: Mapping[str, torch.Tensor], maps: Sequence[LinearMap], others: Sequence[tuple[str, str]],
          rows: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """ComfyUI keys -> diffusers keys, splitting fused rows by ``rows`` (diffusers module -> out rows)."""
    out: dict[str, torch.Tensor] = {}
    for lm in maps:
        sizes = [rows[p] for p in lm.parts]
        for suffix in ("weight", "bias"):
            t = sd[f"{lm.comfy}.{suffix}"]
            if lm.swap_halves:
                t = swap_halves(t)
            for p, piece in zip(lm.parts, torch.split(t, sizes, dim=0), strict=True):
                out[f"{p}.{suffix}"] = piece.contiguous()
    for ck, dk in others:
        out[dk] = sd[ck]
    return out


def split_fp8(w8: torch.Tensor, lm: LinearMap, rows: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """The rows of a fused FP8 weight per diffusers part. Splitting by rows under the single
    per-tensor scale is exactly the fused matmul; float8 supports cat/chunk on the CPU."""
    if lm.swap_halves:
        a, b = w8.chunk(2, dim=0)
        w8 = torch.cat([b, a], dim=0)
    out, start = {}, 0
    for p in lm.parts:
        out[p] = w8[start:start + rows[p]].contiguous()
        start += rows[p]
    return out


def linear_rows(make_model: Callable[[Mapping], nn.Module], cfg: Mapping) -> dict[str, int]:
    """Output rows of every linear of a model built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = make_model(cfg)
    return {n: m.out_features for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def to_comfy(fam: ModuleType, sd: Mapping[str, torch.Tensor], cfg: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers state dict of family module ``fam`` under ComfyUI's key names (fused linears)."""
    return fuse(sd, fam.linear_maps(cfg), fam.other_maps(cfg))


def from_comfy(fam: ModuleType, sd: Mapping[str, torch.Tensor], cfg: Mapping) -> dict[str, torch.Tensor]:
    """ComfyUI keys -> diffusers keys, fused rows split by the model's own output sizes."""
    return split(sd, fam.linear_maps(cfg), fam.other_maps(cfg), linear_rows(fam.make_model, cfg))
