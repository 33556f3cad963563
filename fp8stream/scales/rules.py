"""Scale rules: from samples of |activation| to the amax the FP8 range (±448) should cover.

`input_scale = amax / 448`. A scale too small clips (unbounded error: the noise users see), one
too large only loses small values to subnormals (docs/scales.md), so every rule errs upwards.
"""

from __future__ import annotations

import torch

from fp8stream.scales.fp8_maths import E4M3_MAX
from fp8stream.scales.rule_settings import RULES  # noqa: F401  (declared there: --help reads it without torch)


def amax_max(samples: torch.Tensor) -> float:
    return float(samples.abs().max())


def amax_percentile(samples: torch.Tensor, percentile: float) -> float:
    flat = samples.abs().flatten().float()
    k = max(1, min(flat.numel(), int(round(flat.numel() * percentile / 100.0))))
    return float(flat.kthvalue(k).values)


def _fp8_roundtrip(x: torch.Tensor, scale: float) -> torch.Tensor:
    q = (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q.float() * scale


def amax_mse(samples: torch.Tensor, candidates: int = 48, weights: torch.Tensor | None = None) -> float:
    """The amax in [max/8, max] whose FP8 round trip of the samples has the least squared error
    (optionally weighted: histogram counts)."""
    x = samples.flatten().float()
    wt = torch.ones_like(x) if weights is None else weights.flatten().float()
    top = float(x.abs().max())
    if top == 0.0:
        return 0.0
    best, best_err = top, float("inf")
    for i in range(candidates):
        amax = top * 2.0 ** (-3.0 * i / (candidates - 1))
        err = float(((_fp8_roundtrip(x, amax / E4M3_MAX) - x).pow(2) * wt).sum())
        if err < best_err:
            best, best_err = amax, err
    return best


def apply_rule(rule: str, samples: torch.Tensor, percentile: float = 99.99) -> float:
    if rule == "max":
        return amax_max(samples)
    if rule == "percentile":
        return amax_percentile(samples, percentile)
    if rule == "mse":
        return amax_mse(samples)
    raise ValueError(f"unknown rule {rule!r}")


# ---- rules on a log2 histogram of |x| (recorded statistics, methods/stats/stats_file.py) ---


def amax_from_histogram(rule: str, amax: float, counts, lo_log2: float, bins_per_octave: int,
                        percentile: float = 99.99) -> float:
    """A rule applied to a histogram of |x|: bin i covers [2^(lo + i/b), 2^(lo + (i+1)/b)).

    percentile: the upper edge of the bin where the percentile falls (errs high), at most amax.
    mse: the least squared FP8 round-trip error over bin centres weighted by counts.
    """
    if rule == "max" or amax <= 0:
        return amax
    c = torch.as_tensor(counts, dtype=torch.float64)
    total = float(c.sum())
    if total == 0:
        return amax
    edges = 2.0 ** (lo_log2 + torch.arange(len(c) + 1, dtype=torch.float64) / bins_per_octave)
    if rule == "percentile":
        cum = torch.cumsum(c, 0) / total
        i = int(torch.searchsorted(cum, torch.tensor(percentile / 100.0, dtype=torch.float64)))
        return min(amax, float(edges[min(i + 1, len(c))]))
    if rule == "mse":
        centres = torch.sqrt(edges[:-1] * edges[1:]).clamp(max=amax)
        keep = c > 0
        return amax_mse(centres[keep].float(), weights=c[keep].float())
    raise ValueError(f"unknown rule {rule!r}")
