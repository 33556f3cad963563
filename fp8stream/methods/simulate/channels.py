"""The per-channel model of one input tensor (bound, Gaussian mean and spread) and the small maths
the weight-aware simulation builds it from: sinusoidal embeddings, held embedder weights used a
block of rows at a time, spectral norms without an SVD. The activation model: activation_model.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fp8stream.scales.fp8_maths import dequantize_rows
from fp8stream.scales.layer_warning import LayerWarning, WarningKind

TOKENS = 4096
GAUSS_MAX = math.sqrt(2 * math.log(TOKENS))  # expected max of N(0,1) over TOKENS draws
EXTERNAL_RMS = 2.0


@dataclass
class Channels:
    """A model of one input tensor: per-channel hard bound, Gaussian mean/spread, and norms."""

    bound: np.ndarray  # |x_c| <= bound_c
    mean: np.ndarray
    spread: np.ndarray
    norm_bound: float  # ||x|| per token
    rms: float  # estimated rms of an element
    notes: list[LayerWarning] = field(default_factory=list)  # the warnings of the layers that read it
    # rests on an assumed range of a model input (its notes say which): then no proof
    assumed: bool = False

    @property
    def estimate(self) -> np.ndarray:
        return np.abs(self.mean) + self.spread * GAUSS_MAX


def external(n: int, what: str, rms: float = EXTERNAL_RMS) -> Channels:
    """A model input or unrecognised source: nothing in the file bounds it, so its rms is ASSUMED."""
    b = max(4.0 * rms, rms * math.sqrt(n))
    return Channels(np.full(n, b), np.zeros(n), np.full(n, rms / 2.0), rms * math.sqrt(n), rms / 2.0,
                    [LayerWarning(WarningKind.ASSUMED_INPUT, f"ASSUMED {what}: rms <= {rms:g}")], assumed=True)


def finish(c: Channels) -> Channels:
    """Norm bound and rms of a per-channel model (channels independent: the bound is the sum)."""
    c.norm_bound = float(np.sqrt((c.bound ** 2).sum()))
    c.rms = float(np.sqrt((c.mean ** 2 + c.spread ** 2).mean())) if len(c.mean) else 0.0
    return c


def sinusoid(values, dim: int):
    """cat(cos, sin) of value·exp(-ln(10000)·i/half) (BFL/ComfyUI, diffusers with flip_sin_to_cos)."""
    import torch

    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = values[:, None].double() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros(len(values), 1, dtype=torch.float64)], dim=-1)
    return emb


class HeldMatrix:
    """A held weight used in float32 a block of rows at a time, never whole: a 3072x3072 float32
    copy alone is 38 MB, and the held parts stay in their file dtype (raw FP8 bytes or BF16)."""

    BLOCK_ELEMENTS = 1 << 20

    def __init__(self, parts: list, scale: float) -> None:
        """parts: row blocks of the weight as it streamed (numpy or torch, raw FP8 as uint8)."""
        import torch

        self.parts = [torch.from_numpy(p) if isinstance(p, np.ndarray) else p for p in parts]
        self.scale = scale
        self.shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])

    def blocks(self):
        import torch

        step = max(1, self.BLOCK_ELEMENTS // self.shape[1])
        for part in self.parts:
            for start in range(0, part.shape[0], step):
                raw = part[start : start + step]
                w = dequantize_rows(raw, torch.float32) if raw.dtype == torch.uint8 else raw.float()
                yield w.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).mul_(self.scale)

    def apply(self, x):
        """x @ W.T"""
        import torch

        return torch.cat([x @ w.T for w in self.blocks()], dim=-1)

    def row_norms(self):
        import torch

        return torch.cat([w.norm(dim=1) for w in self.blocks()])


def spectral(w: HeldMatrix, iters: int = 30) -> float:
    """Largest singular value by power iteration (deterministic start), times 1.01 for slack,
    and never above the Frobenius norm. No SVD: on a 3072x768 float64 matrix it took 1-12 s
    and ~500 MB here. The matrix is decoded to float32 once for the iterations (one embedder
    weight, 38 MB at 3072x3072), not once per product: decoding 60 times took 2 s on Flux."""
    import torch

    blocks = list(w.blocks())
    v = torch.ones(w.shape[1]) / math.sqrt(w.shape[1])
    s = 0.0
    for _ in range(iters):
        u = torch.cat([v @ b.T for b in blocks], dim=-1)
        s = float(u.norm())
        if s == 0:
            return 0.0
        u = u / s
        v, start = torch.zeros(w.shape[1]), 0
        for b in blocks:
            v += b.T @ u[start : start + b.shape[0]]
            start += b.shape[0]
        v = v / v.norm()
    return min(s * 1.01, float(torch.cat([b.norm(dim=1) for b in blocks]).norm()))
