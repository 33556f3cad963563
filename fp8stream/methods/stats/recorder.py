"""`fp8stream.record(model)`: record the real input range of every nn.Linear of any torch model.

    import fp8stream
    with fp8stream.record(pipe.transformer, "stats.json") as rec:
        for prompt in prompts:
            pipe(prompt, num_inference_steps=28)      # every timestep is recorded
    # then: fp8stream calibrate model_fp8.safetensors out.safetensors --method stats --stats stats.json

Forward pre-hooks see each Linear's input; per layer only the running amax, counts and a
log2 histogram of |x| (192 bins, stats_file.py) are kept, on the model's device, so memory does not
grow with the number of calls. Names are the model's own module names (diffusers, ComfyUI,
transformers); `calibrate --stats` matches them to checkpoint layers (stats_file.py). Modules that
subclass nn.Linear (ComfyUI's ops, LoRA wrappers) are included; pass `only` to filter names.
"""

from __future__ import annotations

import contextlib
import json
from typing import Callable, Iterator

import torch
import torch.nn as nn

from fp8stream.methods.stats.stats_file import FORMAT, HIST_BINS, HIST_BINS_PER_OCTAVE, HIST_LO_LOG2, VERSION


class Recorder:
    def __init__(self) -> None:
        self.amax: dict[str, torch.Tensor] = {}
        self.hist: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.count: dict[str, int] = {}
        self.zeros: dict[str, int] = {}

    @torch.no_grad()
    def observe(self, name: str, x: torch.Tensor) -> None:
        a = x.detach().abs().float().reshape(-1)
        m = a.max() if a.numel() else torch.zeros((), device=a.device)
        prev = self.amax.get(name)
        self.amax[name] = m if prev is None else torch.maximum(prev, m)
        nz = a[a > 0]
        idx = ((torch.log2(nz) - HIST_LO_LOG2) * HIST_BINS_PER_OCTAVE).floor().clamp(0, HIST_BINS - 1).long()
        h = torch.bincount(idx, minlength=HIST_BINS)
        self.hist[name] = h if name not in self.hist else self.hist[name] + h
        self.calls[name] = self.calls.get(name, 0) + 1
        self.count[name] = self.count.get(name, 0) + a.numel()
        self.zeros[name] = self.zeros.get(name, 0) + int(a.numel() - nz.numel())

    def to_dict(self) -> dict:
        layers = {}
        for name in self.amax:
            layers[name] = {"amax": float(self.amax[name]), "calls": self.calls[name], "count": self.count[name],
                            "zeros": self.zeros[name], "hist": [int(v) for v in self.hist[name].cpu().tolist()]}
        return {"format": FORMAT, "version": VERSION,
                "histogram": {"lo_log2": HIST_LO_LOG2, "bins_per_octave": HIST_BINS_PER_OCTAVE, "bins": HIST_BINS},
                "layers": layers}

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, separators=(",", ":"))


@contextlib.contextmanager
def record(model: nn.Module, path: str | None = None, only: Callable[[str], bool] | None = None) -> Iterator[Recorder]:
    """Hook every nn.Linear of `model`; on exit remove the hooks and (with `path`) save the stats."""
    rec = Recorder()
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and (only is None or only(name)):
            handles.append(mod.register_forward_pre_hook(lambda m, args, _n=name: rec.observe(_n, args[0])))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()
    if path is not None:
        rec.save(path)
