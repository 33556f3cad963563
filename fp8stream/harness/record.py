"""The full input of every ``nn.Linear`` over a run, and re-keying by ComfyUI layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn

from fp8stream.harness.names import LinearMap


@dataclass
class LinearInputs:
    """Each linear's inputs over a run, flattened to [rows, in_features] and concatenated.

    ``call_rows[name]`` gives the rows of each forward call, so per-call (dynamic) scaling
    can be reproduced on the concatenation.
    """

    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    call_rows: dict[str, list[int]] = field(default_factory=dict)

    def calls(self, name: str) -> list[torch.Tensor]:
        return list(torch.split(self.inputs[name], self.call_rows[name], dim=0))

    def amax(self, name: str) -> float:
        return float(self.inputs[name].abs().max())


def record_linear_inputs(model: nn.Module, run_fn: Callable[[], object],
                         only: Callable[[str], bool] | None = None) -> LinearInputs:
    """Run ``run_fn()`` with forward pre-hooks on every ``nn.Linear`` of ``model``; keep full inputs.

    Inputs are detached F32 copies on the CPU (tiny models only: a DiT sampling run of 16
    images x 20 steps is a few tens of MB). ``only`` filters layer names.
    """
    parts: dict[str, list[torch.Tensor]] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and (only is None or only(name)):
            def hook(m, args, _name=name):
                x = args[0]
                parts.setdefault(_name, []).append(x.detach().reshape(-1, x.shape[-1]).float().clone())
            handles.append(mod.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            run_fn()
    finally:
        for h in handles:
            h.remove()
    rec = LinearInputs()
    for name, xs in parts.items():
        rec.inputs[name] = torch.cat(xs, dim=0)
        rec.call_rows[name] = [x.shape[0] for x in xs]
    return rec


def inputs_by_comfy_name(rec: LinearInputs, maps: Sequence[LinearMap]) -> LinearInputs:
    """Re-key a diffusers recording by ComfyUI layer: a fused layer's input is its parts' shared input."""
    out = LinearInputs()
    for lm in maps:
        first = lm.parts[0]
        if first in rec.inputs:
            out.inputs[lm.comfy] = rec.inputs[first]
            out.call_rows[lm.comfy] = rec.call_rows[first]
    return out
