"""The options that change a scale's value, recorded in the output's metadata. Imports no torch."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from fp8stream.errors import UsageError

SIM_MODES = ("bound", "hybrid", "note")
RULES = ("max", "percentile", "mse")
MICRO_BATCH_TOKENS = 2048  # forward: the default micro-batch holds as many samples as fit in this
STATS_MARGIN = 2.0  # stats with --rule max: recorded max x this, capped by the bound (calibration/margin.py)


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
    stats_margin: float | None = None  # stats: None = STATS_MARGIN for --rule max, 1 for percentile/mse
    forward_margin: float | None = None  # forward: scale = margin x forward amax; None: the family's (method.py)
    forward_batch: int = 4  # forward: synthetic samples (timesteps, text scales, guidance)
    forward_tokens: int = 256  # forward: latent tokens per sample
    forward_text_tokens: int = 128  # forward: text tokens per sample
    forward_threads: int = 2  # forward: torch threads pinned for the pass
    forward_micro_batch: int | None = None  # forward: samples run at once; None: micro_batch_for()
    forward_conditioning: str = "weight-only"  # forward: conditioning-path layers: weight-only | fp8
    assume_input_rms: float | None = None  # forward: opt-in bound for layers it cannot reach
    # a stream (pipe, zstd) is spooled to a temporary file for the forward pass; False: it is
    # not, and the forward pass does not run on it (the bound instead). Not recorded: a file
    # input is unaffected, and a spooled stream gives the file's bytes.
    spool: bool = True
    progress: bool = False  # a progress bar for long passes (shows only; not recorded, changes no value)

    def __post_init__(self) -> None:
        # The one check of what the options need (CLI and API alike): an error before any work.
        if self.method == "stats" and not self.stats:
            raise UsageError("--method stats needs --stats FILE")

    @property
    def effective_stats_margin(self) -> float:
        if self.stats_margin is not None:
            return float(self.stats_margin)
        return STATS_MARGIN if self.rule == "max" else 1.0

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"method": self.method, "rule": self.rule}
        if self.rule == "percentile":
            out["percentile"] = self.percentile
        if self.method == "heuristic":
            return {"method": self.method, "factor": self.factor}
        if self.method == "stats":
            out["stats"] = os.path.basename(self.stats or "")
            out["stats_margin"] = self.effective_stats_margin
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

        micro = self.forward_micro_batch or micro_batch_for(self.forward_batch, self.forward_tokens,
                                                            self.forward_text_tokens)
        out: dict[str, object] = {"margin": "family" if self.forward_margin is None else self.forward_margin,
                                  "batch": self.forward_batch, "micro_batch": micro,
                                  "tokens": self.forward_tokens, "text_tokens": self.forward_text_tokens,
                                  "threads": self.forward_threads, "seed": self.seed,
                                  "conditioning": self.forward_conditioning,
                                  "torch": installed("torch"), "diffusers": installed("diffusers"),
                                  "transformers": installed("transformers")}
        if self.assume_input_rms is not None:
            out["assume_input_rms"] = self.assume_input_rms
        return out


def micro_batch_for(batch: int, image_tokens: int, text_tokens: int) -> int:
    """The forward pass's default micro-batch: the samples whose image and text tokens fit
    MICRO_BATCH_TOKENS (at least one, at most the batch). The defaults (4 samples of 256 + 128
    tokens) run as one; more tokens or samples run in micro-batches, so the activations stay
    those of about 2,000 tokens. From the options alone: the same on every device."""
    return max(1, min(batch, MICRO_BATCH_TOKENS // max(1, image_tokens + text_tokens)))


def resolve_device(device: str) -> str:
    """auto -> cuda when available. Without an NVIDIA driver on the machine, auto is the CPU
    without importing torch here (the run imports it where it needs it)."""
    if device in ("auto", "cpu") and not _nvidia_driver():
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


def _nvidia_driver() -> bool:
    """Whether a CUDA device may be there: an NVIDIA kernel driver is loaded on Linux (torch.cuda
    finds no device without one); elsewhere, not known without asking torch."""
    return os.path.exists("/proc/driver/nvidia/version") or not sys.platform.startswith("linux")
