"""What the streaming pass measures of each Linear (engine.py): its input and output amax, kept
on the device while the pass runs, and the one rule that turns them into each checkpoint
weight's input amax (the attention mix bound, the max over the Linears a fused weight feeds).
The rule is a function of the ranges given, so the pass can apply it to what it has seen so
far (calibrate's prediction: methods/forward/prediction.py) and the end result to all of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from fp8stream.methods.forward.mapping import Run
from fp8stream.names.suffixes import WEIGHT


@dataclass
class Pass:
    """What one forward pass saw: each diffusers Linear's input amax, and memory figures."""

    amax: dict[str, float] = field(default_factory=dict)
    out_amax: dict[str, float] = field(default_factory=dict)  # each Linear's output amax
    # Linears whose input is one vector per sample (the conditioning path), in the order they ran
    per_sample: list[str] = field(default_factory=list)
    live: int = 0
    peak_live: int = 0
    weights_read: int = 0


class Ranges:
    """Each Linear's input and output amax kept as 0-d tensors where the model computes, read
    back once at the end: no per-Linear synchronisation with the GPU. The values are those a
    float() per call gave (a max is exact; the same combination rules)."""

    def __init__(self) -> None:
        self.amax: dict[str, torch.Tensor] = {}
        self.out_amax: dict[str, torch.Tensor] = {}

    @staticmethod
    def add(into: dict[str, torch.Tensor], name: str, x: torch.Tensor) -> None:
        a = x.abs().max() if x.numel() else torch.zeros((), dtype=x.dtype, device=x.device)
        prev = into.get(name)
        # NaN stays visible (max() would hide it): a NaN input means no usable range
        into[name] = a if prev is None else torch.where(a.isnan() | prev.isnan(), a, torch.maximum(prev, a))

    def settle(self, state: Pass) -> None:
        """Read every range back (one transfer) into the Pass's floats."""
        names = [(state.amax, n) for n in self.amax] + [(state.out_amax, n) for n in self.out_amax]
        tensors = list(self.amax.values()) + list(self.out_amax.values())
        if not tensors:
            return
        for (into, name), v in zip(names, read_back(tensors), strict=True):
            into[name] = v
        self.amax.clear()
        self.out_amax.clear()

    @staticmethod
    def now(into: Mapping[str, torch.Tensor], names: Iterable[str]) -> dict[str, float]:
        """The ranges of `names` seen so far, as floats (those not seen yet are absent); read
        back in one transfer, the tensors left as they are."""
        seen = [n for n in dict.fromkeys(names) if n in into]
        if not seen:
            return {}
        return dict(zip(seen, read_back([into[n] for n in seen]), strict=True))


def read_back(tensors: list[torch.Tensor]) -> list[float]:
    """0-d ranges where the model computes, as floats: one transfer from the device."""
    return torch.stack([t.float().reshape(()) for t in tensors]).cpu().tolist()


def mix_bound(out_amax: Mapping[str, float], groups: list[list[str]]) -> float | None:
    """The attention mix is a convex combination of value rows, so |mix_c| <= max |v_c|: the
    sum over mixes added together of the largest value seen in the pass. Synthetic inputs
    give diffuse attention, real ones sharper: the mix's own amax falls short (measured:
    real/forward up to 4.8 on attention outputs, real/this bound at most 0.96)."""
    total = 0.0
    for group in groups:
        seen = [out_amax[n] for n in group if n in out_amax]
        if not seen:
            return None
        total += max(seen)
    return total


def estimates(amax: Mapping[str, float], out_amax: Mapping[str, float],
              value_sources: Mapping[str, list[list[str]]]) -> dict[str, float]:
    """Each Linear's input amax; attention output projections at least their mix bound."""
    out = dict(amax)
    for name, groups in value_sources.items():
        bound = mix_bound(out_amax, groups)
        if name in out and bound is not None and out[name] == out[name]:
            out[name] = max(out[name], bound)
    return out


def layer_amax(linears: Iterable[str], mapping: Mapping[str, list[Run]], est: Mapping[str, float]) -> dict[str, float]:
    """Input amax per checkpoint weight tensor (a fused checkpoint linear feeds several
    diffusers Linears the same input: the max over them), from each Linear's estimate."""
    out: dict[str, float] = {}
    for name in linears:
        a = est.get(name)
        if a is None:
            continue
        for run in mapping[name + WEIGHT]:
            prev = out.get(run.source)
            out[run.source] = a if prev is None or a != a or prev != prev else max(prev, a)
    return out
