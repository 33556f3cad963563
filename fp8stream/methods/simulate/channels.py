"""The per-channel model of one input tensor (bound, Gaussian mean and spread) and the small maths
the weight-aware simulation builds it from: sinusoidal embeddings, held embedder weights used a
block of rows at a time, spectral norms without an SVD. The activation model: activation_model.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fp8stream.io.dtypes import DTYPE_BITS
from fp8stream.methods.simulate.producer_rows import decode_rows
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


def sinusoid(values: np.ndarray, dim: int) -> np.ndarray:
    """cat(cos, sin) of value·exp(-ln(10000)·i/half) (BFL/ComfyUI, diffusers with flip_sin_to_cos), float64."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    args = np.asarray(values, dtype=np.float64)[:, None] * freqs[None]
    emb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
    if dim % 2:
        emb = np.concatenate([emb, np.zeros((len(args), 1))], axis=-1)
    return emb


def silu(x: np.ndarray) -> np.ndarray:
    """x·sigmoid(x) in x's dtype (float32 here), a new array; exp(-x) overflows to inf for x << 0,
    giving -0."""
    out = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.divide(x, out, out=out)


class HeldMatrix:
    """A held weight (its parts in their file dtype: raw FP8 bytes or BF16), decoded to float32
    on first use and kept while this object lives: the bound holds one embedder's two weights
    at a time (47 MB for Flux's pooled-text embedder, whose weights are used three times each)."""

    def __init__(self, parts: list[np.ndarray], dtype: str, scale: float) -> None:
        """parts: row blocks of the weight as it streamed, raw bytes of `dtype` (uint8 [r, row_bytes])."""
        self.parts, self.dtype = parts, dtype
        self.scale = scale
        self.shape = (sum(p.shape[0] for p in parts), parts[0].shape[1] * 8 // DTYPE_BITS[dtype])
        self._values: np.ndarray | None = None

    def values(self) -> np.ndarray:
        """W as float32 [out, in], times the weight scale; NaN and Inf read as 0."""
        if self._values is None:
            w = np.empty(self.shape, dtype=np.float32)
            start = 0
            for part in self.parts:
                w[start : start + part.shape[0]] = decode_rows(part, self.dtype)
                start += part.shape[0]
            if not np.isfinite(w).all():
                np.nan_to_num(w, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            w *= np.float32(self.scale)
            self._values = w
        return self._values

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x @ W.T (float32)"""
        return x @ self.values().T

    def row_norms(self) -> np.ndarray:
        return _norms(self.values())


def _norms(w: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each row (of the vector) of float32 values, float32."""
    return np.sqrt(np.square(w).sum(axis=-1))


def spectral(w: HeldMatrix, iters: int = 30) -> float:
    """Largest singular value by power iteration (deterministic start), times 1.01 for slack,
    and never above the Frobenius norm. No SVD: on a 3072x768 float64 matrix it took 1-12 s
    and ~500 MB here. The products are numpy's own loops (einsum), not BLAS: as fast for a
    matrix times a vector, and the same sums whatever the machine's thread count."""
    m = w.values()
    v = np.ones(w.shape[1], dtype=np.float32) / math.sqrt(w.shape[1])
    s = 0.0
    for _ in range(iters):
        u = np.einsum("ij,j->i", m, v)
        s = float(_norms(u))
        if s == 0:
            return 0.0
        v = np.einsum("i,ij->j", u / s, m)
        v = v / _norms(v)
    return min(s * 1.01, float(_norms(_norms(m))))
