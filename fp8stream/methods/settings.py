"""The options that change a scale's value, recorded in the output's metadata. Imports no torch."""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import KW_ONLY, dataclass

from fp8stream.errors import UsageError
from fp8stream.methods.forward_settings import micro_batch_for
from fp8stream.methods.registry import DEFAULT_METHOD, METHODS, method_settings
from fp8stream.methods.stats_settings import STATS_MARGIN
from fp8stream.options import BATCH, COMMON, flag
from fp8stream.scales.rule_settings import RuleSettings


@dataclass(frozen=True)
class CalibrationSettings(*method_settings(), RuleSettings):
    """Every option that changes the scales' values (recorded in the output's metadata): each
    method's own settings (declared beside its package, with their flags, and listed in the
    registry), the scale rule's that simulate and stats share, and those every method reads.
    Keyword arguments only, `method` aside."""

    method: str = DEFAULT_METHOD  # forward where it can run, else simulate (methods/auto/); its flag: registry
    _: KW_ONLY
    seed: int = flag(0, "--seed", section=COMMON, type="int",
                     help="Seed: same seed, input and device give the same bytes.")
    device: str = flag("cpu", "--device", section=COMMON, choices=("auto", "cpu", "cuda"), cli_default="auto",
                       # resolved: "cpu" or "cuda" (settings.resolve_device)
                       help="Where calibration maths runs; auto = CUDA when available for the forward pass (auto, "
                            "forward); the others' maths keeps up with the disk on the CPU.")
    # a stream (pipe, zstd) is spooled to a temporary file for the forward pass; False: it is
    # not, and the forward pass does not run on it (the bound instead). Not recorded: a file
    # input is unaffected, and a spooled stream gives the file's bytes.
    spool: bool = flag(True, "--spool/--no-spool", section=BATCH, type="bool",
                       help="A pipe or zstd input that the forward pass must read by name is first written, "
                            "decompressed, to a temporary file (beside OUT, or in $TMPDIR), removed when the run "
                            "ends; --no-spool: the forward pass does not run on it and each layer gets the bound "
                            "instead (auto: the bound method).")

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


@functools.cache
def installed(distribution: str) -> str:
    """An installed distribution's version, "missing" when it is not, without importing it
    (recorded in the output's metadata; methods/forward/derived_cache.py keys entries by it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "missing"


def resolve_device(device: str, method: str = "forward") -> str:
    """auto -> cuda when available, for a method a GPU helps (registry: gpu_helps). The CPU, and
    auto without an NVIDIA driver on the machine, are decided without importing torch here (the
    run imports it where it needs it: the bound does not)."""
    if device == "cpu" or (device == "auto" and (not _nvidia_driver() or not METHODS[method].gpu_helps)):
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
