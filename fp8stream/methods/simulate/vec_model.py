"""The model of SiLU(vec), the conditioning vector every AdaLN modulation reads (simulate_method.py's
docstring has the maths): the held time and guidance embedders evaluated over a sweep of t in
[0, 1] and g in [0, 10], the pooled-text embedder bounded through its spectral norms (its input's
rms ASSUMED) and sampled for the estimate. numpy, float32 as the model runs (float64 sinusoids).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from fp8stream.io.overlap import start_thread
from fp8stream.methods.simulate.channels import GAUSS_MAX, Channels, HeldMatrix, silu, sinusoid, spectral
from fp8stream.methods.simulate.sampling import SeededNormal
from fp8stream.scales.layer_warning import LayerWarning, WarningKind

T_SWEEP = 65
G_SWEEP = [float(g) for g in range(0, 11)]
POOLED_SAMPLES = 8


@dataclass
class Embedder:
    """One term of vec: kind "time", "guidance" or "pooled", and its two held linears (biases float64)."""

    kind: str
    w1: HeldMatrix
    b1: np.ndarray
    w2: HeldMatrix
    b2: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """linear, SiLU, linear, in float32."""
        return self.w2.apply(silu(self.w1.apply(x) + self.b1.astype(np.float32))) + self.b2.astype(np.float32)


@dataclass
class Pooled:
    """The pooled-text embedder's part of vec: per-channel bound, norm bound, samples (float32 [8, width])."""

    bound: np.ndarray
    norm: float
    samples: np.ndarray | None


def vec_channels(terms: Iterable[Embedder], width: int, seed: int, external_rms: float) -> Channels:
    """SiLU(vec) over the sweep of t (and g): terms whose output is not `width` wide are left out."""
    known = np.zeros((1, width), dtype=np.float32)
    pooled = Pooled(np.zeros(width), 0.0, None)
    normal = SeededNormal(seed)
    for term in terms:
        if term.w2.shape[0] != width:
            continue
        if term.kind in ("time", "guidance"):
            vals = np.linspace(0, 1, T_SWEEP) * 1000 if term.kind == "time" else np.array(G_SWEEP) * 1000
            e = term(sinusoid(vals, term.w1.shape[1]).astype(np.float32))
            known = (known[:, None, :] + e[None, :, :]).reshape(-1, width)
        else:
            pooled = pooled_part(term, normal, external_rms)
    z_known = silu(known)
    bound = np.abs(z_known).max(0) + 1.1 * pooled.bound
    norm_bound = float(np.sqrt(np.square(z_known).sum(1)).max()) + 1.1 * pooled.norm
    # One pooled sample at a time: all (t, g, pooled) combinations at once took ~200 MB.
    amax, rms = np.zeros(width, dtype=np.float32), 0.0
    for p in [None] if pooled.samples is None else pooled.samples:
        z_est = silu(known if p is None else known + p)
        amax = np.maximum(amax, np.abs(z_est).max(0))
        rms = max(rms, float(np.sqrt(np.square(z_est).mean(1)).max()))
    notes = [] if pooled.samples is None else [
        LayerWarning(WarningKind.ASSUMED_INPUT, f"ASSUMED pooled text rms <= {external_rms:g}")]
    return Channels(bound, np.zeros(width), amax.astype(np.float64) / GAUSS_MAX, norm_bound, rms, notes,
                    assumed=pooled.samples is not None)


def pooled_part(term: Embedder, normal: SeededNormal, external_rms: float) -> Pooled:
    """The pooled-text embedder's bound through the spectral norms of its weights (its input's
    rms ASSUMED, ||p|| <= rms·sqrt(n)), and seeded samples of its output for the estimate."""
    w1, w2 = term.w1, term.w2
    b1, b2 = term.b1.astype(np.float32), term.b2.astype(np.float32)
    n_in = w1.shape[1]
    p_norm = external_rms * math.sqrt(n_in)
    s1, s2 = spectral(w1), spectral(w2)
    h = s1 * p_norm + float(np.linalg.norm(b1))
    h_rows = w1.row_norms() * p_norm + np.abs(b1)
    silu_h = float(np.sqrt((h_rows ** 2).sum()))
    bound = w2.row_norms() * silu_h + np.abs(b2)
    norm = min(s2 * h + float(np.linalg.norm(b2)), float(np.sqrt((bound ** 2).sum())))
    return Pooled(bound, norm, term(normal.randn(POOLED_SAMPLES, n_in)))


class VecAhead:
    """SiLU(vec) computed on a thread as soon as the last byte of every tensor it reads has
    streamed past, not at the tail: the held embedders sit early in a file (safetensors stores
    BF16 tensors before FP8 ones), and the model took ~0.5 s at the tail at any depth (0.48 s of
    simulate's 0.57 s on full-width Flux-dev). The same computation on the same inputs, so the
    same values, only earlier."""

    def __init__(self, waits: Mapping[str, int], width: int) -> None:
        self.width = width  # the modulations' input width: the model is made for it
        self._waits = dict(waits)  # tensor name -> its bytes still to come
        self._lock = threading.Lock()  # bytes arrive from the reading threads too (the copy's tap)
        self._thread: threading.Thread | None = None
        self._result: Channels | None = None
        self._error: BaseException | None = None

    def arrived(self, name: str, nbytes: int) -> bool:
        """`nbytes` of tensor `name` went by; True once, when the last awaited byte has."""
        with self._lock:
            if name not in self._waits:
                return False
            self._waits[name] -= nbytes
            if self._waits[name] > 0:
                return False
            del self._waits[name]
            return not self._waits

    def start(self, compute: Callable[[], Channels]) -> None:
        def run() -> None:
            try:
                self._result = compute()
            except BaseException as e:  # raised where the result is asked for
                self._error = e
        self._thread = threading.Thread(target=run, name="fp8stream vec model", daemon=True)
        start_thread(self._thread)

    def result(self, width: int) -> Channels | None:
        """The model for `width`, once computed; None where it was not started (an awaited
        tensor never came) or was made for another width."""
        if self._thread is None or width != self.width:
            return None
        self.join()
        if self._error is not None:
            raise self._error
        return self._result

    def join(self) -> None:
        """Wait for the thread, if one was started (nothing of a run outlives it)."""
        if self._thread is not None:
            self._thread.join()
