"""The options that change a scale's value, recorded in the output's metadata. Imports no torch."""

from __future__ import annotations

import os
from dataclasses import dataclass

from fp8stream.errors import UsageError

SIM_MODES = ("bound", "hybrid", "note")
RULES = ("max", "percentile", "mse")


@dataclass(frozen=True)
class CalibrationSettings:
    """Every option that changes the scales' values (recorded in the output's metadata)."""

    method: str = "auto"  # forward where it can run, else simulate (fp8stream/forward/auto.py)
    rule: str = "max"
    percentile: float = 99.99
    samples: int = 64
    seed: int = 0
    device: str = "cpu"  # resolved: "cpu" or "cuda"
    sim_mode: str = "bound"  # simulate: bound | hybrid | note
    margin: float = 4.0  # simulate --sim-mode hybrid: times the Gaussian estimate
    factor: float = 0.5  # heuristic: input_scale = weight_scale x factor
    stats: str | None = None  # stats: the stats file
    map: str | None = None  # stats: user name pairs
    fallback: str | None = None  # stats: "simulate" for layers without stats
    forward_margin: float | None = None  # forward: scale = margin x forward amax; None: the family's (method.py)
    forward_batch: int = 4  # forward: synthetic samples (timesteps, text scales, guidance)
    forward_tokens: int = 256  # forward: latent tokens per sample
    forward_text_tokens: int = 128  # forward: text tokens per sample
    forward_threads: int = 2  # forward: torch threads pinned for the pass
    forward_conditioning: str = "weight-only"  # forward: conditioning-path layers: weight-only | fp8
    assume_input_rms: float | None = None
    progress: bool = False  # a progress bar for long passes (shows only; not recorded, changes no value)  # forward: opt-in bound for layers it cannot reach

    def __post_init__(self) -> None:
        # The one check of what the options need (CLI and API alike): an error before any work.
        if self.method == "stats" and not self.stats:
            raise UsageError("--method stats needs --stats FILE")

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"method": self.method, "rule": self.rule}
        if self.rule == "percentile":
            out["percentile"] = self.percentile
        if self.method == "heuristic":
            return {"method": self.method, "factor": self.factor}
        if self.method == "stats":
            out["stats"] = os.path.basename(self.stats or "")
            if self.map:
                out["map"] = os.path.basename(self.map)
            if self.fallback:
                out["fallback"] = self.fallback
        if self.method in ("forward", "auto"):
            out.update(self._describe_forward())
        if self.method in ("simulate", "auto") or self.fallback == "simulate":
            out.update({"sim_mode": self.sim_mode, "samples": self.samples, "seed": self.seed})
            if self.sim_mode == "hybrid":
                out["margin"] = self.margin
        out["device"] = self.device
        return out

    def _describe_forward(self) -> dict[str, object]:
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "missing"

        out: dict[str, object] = {"margin": "family" if self.forward_margin is None else self.forward_margin,
                                  "batch": self.forward_batch,
                                  "tokens": self.forward_tokens, "text_tokens": self.forward_text_tokens,
                                  "threads": self.forward_threads, "seed": self.seed,
                                  "conditioning": self.forward_conditioning,
                                  "torch": installed("torch"), "diffusers": installed("diffusers"),
                                  "transformers": installed("transformers")}
        if self.assume_input_rms is not None:
            out["assume_input_rms"] = self.assume_input_rms
        return out


def resolve_device(device: str) -> str:
    """auto -> cuda when available; torch is imported here only (a calibrating run needs it anyway)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device
