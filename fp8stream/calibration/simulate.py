"""The weight-aware simulation (`--method simulate`, the default): each layer's input range from
the weights that PRODUCE that input, with no model code and no sampling through the weights.

The activation model (graph.py names the producer of every layer; d = a stream's width):

* LayerNorm output n (zero mean, unit variance over d channels): every |n_i| <= sqrt(d-1)
  (a hard bound, reached only when one channel carries all the variance); a Gaussian estimate of
  the largest value over N = 4096 tokens is sqrt(2 ln N) = 4.08.
* affine LayerNorm n·γ + β (BERT/T5 encoders, Wan's norm3): channel c is bounded by
  sqrt(d-1)·|γ_c| + |β_c|; ||x|| <= sqrt(d)·max|γ| + ||β||.
* AdaLN, LN(h)·(1 + scale) + shift (q/k/v, MLP-up, single-block linear1, final layer of DiTs):
  scale_c and shift_c are rows of the modulation linear applied to z = SiLU(vec), so
  |scale_c| <= ||w_c||·||z|| + |b_c| (Cauchy-Schwarz) and channel c is bounded by
  sqrt(d-1)·(|1 + b_sc| + ||w_sc||·||z||) + |b_sh| + ||w_sh||·||z||.
* vec = time embedder(sinusoid(1000 t)) + guidance embedder(sinusoid(1000 g)) + pooled-text
  embedder(p). The small embedder MLPs are held whole (at most HELD_ELEMENTS_MAX = 64M
  elements, 256 MB of F32, together; Flux's are 3 x ~10M) and evaluated exactly over a sweep of
  t in [0, 1] (65 points) and g in [0, 10] (11 points): the worst case over the sweep is kept.
  The pooled text p is not in the file: it is ASSUMED to have rms <= 2 (||p|| <= 2·sqrt(d)), and
  its embedder's contribution is bounded through the spectral norms of its two weights.
  |SiLU(x)| <= |x| and SiLU is 1.1-Lipschitz, so ||SiLU(a + b)|| <= ||SiLU(a)|| + 1.1·||b||.
* a producer linear's output y_c = w_c·x + b_c: |y_c| <= ||w_c||·||x|| + |b_c|; Gaussian
  estimate |b_c| + ||w_c||·rms(x)·4.08. Row norms ||w_c|| are one lookup pass over the raw FP8
  bytes (`fp8.row_sum_squares`), or over BF16/F32 rows as they stream past; biases are small.
* GELU(y) and SiLU(y) lie in [-0.17, |y|] and [-0.28, |y|]: the producer's bound carries over.
* attention output projection: the attention mix is a convex combination of the value rows over
  tokens, so |mix_c| <= max_tokens |v_c|: the bound of the v rows of the producing qkv layer.
  Flux's single-block linear2 reads cat(attention mix of linear1's v rows, GELU(its mlp rows)).
* sinusoidal timestep embeddings: |x| <= 1.  Model inputs (latents, text-encoder states, pooled
  text) and unrecognised layers: ASSUMED rms <= 2, so |x| <= max(8, 2·sqrt(d)); reported.

Modes (`--sim-mode`): `bound` takes the hard bound (never clips if the assumptions about model
inputs hold; errs high, which FP8 tolerates: docs/scales.md); `hybrid` takes the Gaussian estimate
times `--margin`, capped by the bound; `note` is the research note's approach 2 (unit-normal
rows through the layer's own weight: the layer's OUTPUT, kept for comparison only).
Rules: `max` uses the bound (or margin x estimate); `percentile` and `mse` are applied to
seeded synthetic samples drawn from the per-channel Gaussian model (mean, spread), capped by
the bound.

Memory: per producer one float64 per output row (row norms) plus its bias; the held embedders
(in their file dtype, decoded to float32 one at a time);
per layer a few vectors of its input width. Speed: one row-norm pass per producer weight byte.
Deterministic: samples come from a CPU generator seeded by (seed, layer name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from fp8stream.calibration import graph as G
from fp8stream.calibration.fp8 import E4M3_MAX, dequantize_rows, row_sum_squares, row_sum_squares_torch
from fp8stream.calibration.rules import apply_rule
from fp8stream.formats.layers import FP8Layer

HELD_ELEMENTS_MAX = 64 << 20
TOKENS = 4096
GAUSS_MAX = math.sqrt(2 * math.log(TOKENS))  # expected max of N(0,1) over TOKENS draws
EXTERNAL_RMS = 2.0
EXTREME_AMAX = 1e4
T_SWEEP = 65
G_SWEEP = [float(g) for g in range(0, 11)]


@dataclass
class Channels:
    """A model of one input tensor: per-channel hard bound, Gaussian mean/spread, and norms."""

    bound: np.ndarray  # |x_c| <= bound_c
    mean: np.ndarray
    spread: np.ndarray
    norm_bound: float  # ||x|| per token
    rms: float  # estimated rms of an element
    notes: list[str] = field(default_factory=list)

    @property
    def estimate(self) -> np.ndarray:
        return np.abs(self.mean) + self.spread * GAUSS_MAX


def _external(n: int, what: str) -> Channels:
    b = max(8.0, EXTERNAL_RMS * math.sqrt(n))
    return Channels(np.full(n, b), np.zeros(n), np.ones(n), EXTERNAL_RMS * math.sqrt(n), 1.0,
                    [f"ASSUMED {what}: rms <= {EXTERNAL_RMS:g}"])


class _Rows:
    """Row sums of squares of a BF16/F16/F32 2-D weight from byte chunks (rows may straddle chunks)."""

    def __init__(self, dtype: str, shape: tuple[int, ...], hold: bool):
        from fp8stream.io.dtypes import torch_dtype

        self.fp8 = dtype == "F8_E4M3"
        self.tdt = torch.uint8 if self.fp8 else torch_dtype(dtype)
        self.cols = shape[1]
        self.row_bytes = self.cols * torch.tensor([], dtype=self.tdt).element_size()
        self.carry = b""
        self.sums: list[np.ndarray] = []
        self.hold = hold
        self.held: list[torch.Tensor] = []

    def feed(self, chunk: bytes) -> None:
        if not self.carry and len(chunk) % self.row_bytes == 0 and not isinstance(chunk, bytes):
            buf, whole = chunk, len(chunk)  # the stream hands whole writable rows: no copy
        else:
            buf = bytearray(self.carry) + chunk
            whole = len(buf) // self.row_bytes * self.row_bytes
            self.carry = bytes(buf[whole:])
        if whole:
            raw = torch.frombuffer(buf, dtype=self.tdt, count=whole // self.tdt.itemsize).view(-1, self.cols)
            if self.fp8:  # an FP8 producer that is not calibrated itself (excluded, --include)
                self.sums.append(row_sum_squares(raw.numpy()))
                if self.hold:
                    self.held.append(raw.clone())  # raw bytes: decoded only when used
                return
            # norms accumulated in float32 (relative error ~1e-6 here), 3.6x faster than float64 sums
            norms = torch.linalg.vector_norm(raw, dim=1, dtype=torch.float32).double()
            self.sums.append(norms.square_().numpy())
            if self.hold:
                self.held.append(raw.clone())  # native dtype: half the memory of F32


class WeightAwareMethod:
    """See the module docstring: the activation model a reviewer can check."""

    name = "simulate"

    def __init__(self, settings) -> None:
        self.settings = settings
        self.mode = getattr(settings, "sim_mode", "bound")
        self.margin = float(getattr(settings, "margin", 4.0))
        self.graph: G.Graph | None = None
        self.ws_key: dict[str, str | None] = {}
        self.shapes: dict[str, tuple[int, int]] = {}  # linear -> (out, in)
        self.need_rows: set[str] = set()
        self.held: set[str] = set()
        self.rowsq: dict[str, list[np.ndarray]] = {}
        self.weights: dict[str, list[torch.Tensor]] = {}  # held embedders, unit-scale F32
        self.values: dict[str, torch.Tensor] = {}  # biases, LN affine, weight scales
        self.partial: dict[str, _Rows] = {}
        self._cache: dict[object, Channels] = {}
        self._vec: Channels | None = None

    # ---- set-up from the header ----------------------------------------------------------
    def begin(self, layers: list[FP8Layer], header, whole=None, tensor_path: dict[str, str] | None = None) -> None:
        """`whole`: the merged header of a sharded model; tensors this shard lacks are read from
        their shard (`tensor_path`) with positioned reads, so every shard sees the same model."""
        local = {t.name for t in header.tensors}
        header = whole or header
        names = {t.name for t in header.tensors}
        linears = {t.name[:-7]: t for t in header.tensors if t.name.endswith(".weight") and len(t.shape) == 2}
        for n, t in linears.items():
            self.shapes[n] = (t.shape[0], t.shape[1])
        # The graph covers every linear of the file (family detection, producers), whatever the
        # selection (--include/--exclude/presets) of layers that get a scale.
        self.calibrated = {layer.name for layer in layers}
        self.graph = G.build_graph(sorted(set(linears) | self.calibrated), names)
        # the weight scale's key depends on the flavour (weight_scale, legacy scale_weight, none)
        for n in linears:
            self.ws_key[n] = n + ".weight_scale" if n + ".weight_scale" in names else (
                n + ".scale_weight" if n + ".scale_weight" in names else None)
        self.ws_key.update({layer.name: layer.weight_scale for layer in layers})
        self.held = {n for n in self.graph.held_layers() if n in linears}
        if sum(self.shapes[n][0] * self.shapes[n][1] for n in self.held) > HELD_ELEMENTS_MAX:
            self.held = set()  # too big to hold: vec falls back to an assumption (reported)
        for src in self.graph.sources.values():
            self._collect(src)
        self.need_rows |= self.held
        self.wanted = set()
        for n in self.need_rows:
            self.wanted |= {n + ".weight", n + ".bias", self.ws_key.get(n) or n + ".weight_scale"}
        self.wanted.discard(None)
        for src in self.graph.sources.values():
            self.wanted |= set(G.tensors_needed(src))
        self.wanted &= names
        if tensor_path:
            self._read_other_shards(header, local, tensor_path)

    def _read_other_shards(self, header, local: set[str], tensor_path: dict[str, str]) -> None:
        from fp8stream.io.reader import LazyFile, chunk_bytes_for

        infos = {t.name: t for t in header.tensors}
        calibrated, self.calibrated = self.calibrated, set()  # FP8 weights read here go through observe_tensor
        try:
            for name in sorted(self.wanted - local):
                info, path = infos[name], tensor_path.get(name)
                if path is None or not self.wants(info):
                    continue
                with LazyFile(path) as f:
                    for chunk in f.read_chunks(f.header.get(name), chunk_bytes_for(info)):
                        self.observe_tensor(info, chunk)
        finally:
            self.calibrated = calibrated
    def _collect(self, src) -> None:
        for p in G.producers(src):
            if p in self.shapes:
                self.need_rows.add(p)
                s = self.graph.sources.get(p)
                if s is not None:
                    self._collect(s)

    # ---- streaming -----------------------------------------------------------------------
    def wants(self, info) -> bool:
        # FP8 weights of calibrated layers come through observe_weight; other FP8 producers here
        if info.dtype.startswith("F8_"):
            return info.name in self.wanted and info.name[:-7] not in self.calibrated and info.dtype == "F8_E4M3"
        return info.name in self.wanted

    def observe_tensor(self, info, chunk: bytes) -> None:
        name = info.name
        if name.endswith(".weight") and len(info.shape) == 2 and name[:-7] in self.need_rows:
            acc = self.partial.get(name)
            if acc is None:
                acc = self.partial[name] = _Rows(info.dtype, info.shape, name[:-7] in self.held)
            acc.feed(chunk)
            return
        from fp8stream.io.dtypes import torch_dtype

        prev = self.values.get(name)
        t = torch.frombuffer(bytearray(chunk), dtype=torch_dtype(info.dtype)).float() if len(chunk) else torch.zeros(0)
        self.values[name] = t if prev is None else torch.cat([prev, t])

    def observe_weight(self, layer: FP8Layer, rows: torch.Tensor, row_start: int) -> None:
        if layer.name not in self.need_rows:
            return
        if rows.device.type == "cpu":
            sums = row_sum_squares(rows.numpy())
        else:  # stays on the GPU: no sync per chunk (moved to the host at the tail)
            sums = row_sum_squares_torch(rows)
        self.rowsq.setdefault(layer.name, []).append(sums)
        if layer.name in self.held:
            self.weights.setdefault(layer.name, []).append(rows.cpu().clone())  # raw FP8 bytes

    def weight_done(self, layer: FP8Layer) -> None:
        pass

    # ---- the tail: resolve every model ---------------------------------------------------
    def _wscale(self, n: str) -> float:
        v = self.values.get(self.ws_key.get(n) or n + ".weight_scale")
        return float(v.reshape(-1)[0]) if v is not None and v.numel() else 1.0

    def _finish_partial(self) -> None:
        for name, acc in list(self.partial.items()):
            n = name[:-7]
            self.rowsq[n] = acc.sums
            if acc.hold:
                self.weights[n] = acc.held
        self.partial.clear()

    def _row_norms(self, n: str) -> np.ndarray | None:
        parts = self.rowsq.get(n)
        if not parts:
            return None
        parts = [p.cpu().numpy() if isinstance(p, torch.Tensor) else p for p in parts]
        return np.sqrt(np.concatenate(parts)) * self._wscale(n)

    def _bias(self, n: str, rows: int) -> np.ndarray:
        b = self.values.get(n + ".bias")
        return np.zeros(rows) if b is None else b.double().numpy()

    def _weight(self, n: str) -> "HeldMatrix":
        return HeldMatrix(self.weights[n], self._wscale(n))

    def _row_range(self, n: str, rows: str) -> slice:
        out, d = self.shapes[n]
        if rows == "qkv_v":
            return slice(2 * d, 3 * d)
        if rows == "mlp":
            return slice(3 * d, out)
        return slice(0, out)

    def _output(self, n: str, rows: str = "all") -> Channels | None:
        """The output of linear n (rows), from its row norms and its own input's model."""
        norms = self._row_norms(n)
        if norms is None or n not in self.shapes:
            return None
        x = self.model_of(self.graph.sources.get(n, G.External("input of an unnamed producer")), self.shapes[n][1])
        sl = self._row_range(n, rows)
        w, b = norms[sl], self._bias(n, len(norms))[sl]
        return Channels(w * x.norm_bound + np.abs(b), b, w * x.rms, float("nan"), float("nan"), list(x.notes))

    def model_of(self, src, width: int) -> Channels:
        key = (src, width)
        if key not in self._cache:
            self._cache[key] = self._model(src, width)
        return self._cache[key]

    def _model(self, src, width: int) -> Channels:
        if isinstance(src, G.Sinusoid):
            return Channels(np.ones(width), np.zeros(width), np.full(width, math.sqrt(0.5)),
                            math.sqrt(width / 2), math.sqrt(0.5))
        if isinstance(src, G.External):
            return _external(width, src.what)
        if isinstance(src, G.Norm):
            g = self.values.get(src.weight) if src.weight else None
            b = self.values.get(src.bias) if src.bias else None
            notes = []
            if src.weight and g is None:
                notes.append(f"{src.weight} not in the file: gamma assumed 1")
            g = np.ones(width) if g is None else np.abs(g.double().numpy())
            b = np.zeros(width) if b is None else b.double().numpy()
            return _finish(Channels(math.sqrt(width - 1) * g + np.abs(b), b, g, 0.0, 0.0, notes))
        if isinstance(src, G.Act):
            y = self._output(src.producer, src.rows)
            if y is None:
                c = _external(width, f"{src.producer} statistics missing")
                return c
            floor = {"gelu": 0.17, "silu": 0.28}.get(src.fn, 0.0)
            y.bound = np.maximum(y.bound, floor)
            if width and len(y.bound) != width:
                return _external(width, f"{src.producer} rows do not match the width {width}")
            return _finish(y)
        if isinstance(src, G.Concat):
            parts = [self.model_of(p, 0) for p in src.parts]
            c = Channels(*(np.concatenate([getattr(p, a) for p in parts]) for a in ("bound", "mean", "spread")),
                         0.0, 0.0, [n for p in parts for n in p.notes])
            if width and len(c.bound) != width:
                return _external(width, f"concatenated parts have {len(c.bound)} channels, not {width}")
            return _finish(c)
        if isinstance(src, G.Vec):
            return self._vec_model(width)
        if isinstance(src, G.AdaLN):
            return self._adaln(src, width)
        raise TypeError(src)

    def _adaln(self, src: G.AdaLN, width: int) -> Channels:
        norms = self._row_norms(src.mod)
        if norms is None:
            c = _external(width, f"modulation {src.mod} statistics missing")
            return c
        z = self.model_of(G.Vec(self.graph.family), self.shapes[src.mod][1])
        b = self._bias(src.mod, len(norms))
        d = len(norms) // src.chunks
        if d != width:
            return _external(width, f"{src.mod} has {len(norms)} rows, not {src.chunks} x {width}")
        extra = np.zeros(len(norms))
        if src.extra_bias and src.extra_bias in self.values:
            extra = self.values[src.extra_bias].double().numpy().reshape(-1)[: len(norms)]
        sh, sc = slice(src.shift * d, (src.shift + 1) * d), slice(src.scale * d, (src.scale + 1) * d)
        scale_b = np.abs(1 + b[sc] + extra[sc]) + norms[sc] * z.norm_bound
        shift_b = np.abs(b[sh] + extra[sh]) + norms[sh] * z.norm_bound
        z_est = z.rms * GAUSS_MAX  # |w·z| for z not aligned with w: ||w||·rms(z)·(a few)
        scale_g = np.abs(1 + b[sc] + extra[sc]) + norms[sc] * z_est
        shift_g = np.abs(b[sh] + extra[sh]) + norms[sh] * z_est
        c = Channels(math.sqrt(d - 1) * scale_b + shift_b, shift_g, scale_g, 0.0, 0.0, list(z.notes))
        return _finish(c)

    def _vec_model(self, width: int) -> Channels:
        """SiLU(vec) over the sweep of t (and g), from the held embedders."""
        if self._vec is not None and len(self._vec.bound) == width:
            return self._vec
        terms = [t for t in self.graph.vec_terms if t[1] in self.weights and t[2] in self.weights]
        if not terms:
            c = _external(width, "conditioning vector (embedders not held)")
            c.bound = np.maximum(c.bound, 0.28)
            self._vec = c
            return c
        ts = torch.linspace(0, 1, T_SWEEP, dtype=torch.float64)
        known = torch.zeros(1, width)
        pooled_bound = np.zeros(width)
        pooled_norm = 0.0
        notes = []
        gen = torch.Generator().manual_seed(self.settings.seed)
        pooled_samples = None
        for kind, a, b in terms:
            w1 = w2 = mlp = None  # the previous term's float32 weights go before the next are made
            w1, w2 = self._weight(a), self._weight(b)
            b1 = torch.from_numpy(self._bias(a, w1.shape[0])).float()
            b2 = torch.from_numpy(self._bias(b, w2.shape[0])).float()
            mlp = lambda x, w1=w1, w2=w2, b1=b1, b2=b2: w2.apply(torch.nn.functional.silu(w1.apply(x) + b1)) + b2  # noqa: E731
            if w2.shape[0] != width:
                continue
            if kind in ("time", "guidance"):
                vals = ts * 1000 if kind == "time" else torch.tensor(G_SWEEP, dtype=torch.float64) * 1000
                e = mlp(_sinusoid(vals, w1.shape[1]).float())
                known = (known[:, None, :] + e[None, :, :]).reshape(-1, width)
            else:
                n_in = w1.shape[1]
                p_norm = EXTERNAL_RMS * math.sqrt(n_in)
                s1, s2 = _spectral(w1), _spectral(w2)
                h = s1 * p_norm + float(b1.norm())
                pooled_norm = s2 * h + float(b2.norm())
                h_rows = w1.row_norms().numpy() * p_norm + np.abs(b1.numpy())
                silu_h = float(np.sqrt((h_rows ** 2).sum()))
                pooled_bound = w2.row_norms().numpy() * silu_h + np.abs(b2.numpy())
                pooled_norm = min(pooled_norm, float(np.sqrt((pooled_bound ** 2).sum())))
                pooled_samples = mlp(torch.randn(8, n_in, generator=gen))
                notes.append(f"ASSUMED pooled text rms <= {EXTERNAL_RMS:g}")
        z_known = torch.nn.functional.silu(known)
        bound = z_known.abs().amax(0).numpy() + 1.1 * pooled_bound
        norm_bound = float(z_known.norm(dim=1).max()) + 1.1 * pooled_norm
        # One pooled sample at a time: all (t, g, pooled) combinations at once took ~200 MB.
        amax, rms = torch.zeros(width), 0.0
        for p in [None] if pooled_samples is None else pooled_samples:
            z_est = torch.nn.functional.silu(known if p is None else known + p)
            amax = torch.maximum(amax, z_est.abs().amax(0))
            rms = max(rms, float(z_est.pow(2).mean(1).sqrt().max()))
        c = Channels(bound, np.zeros(width), amax.double().numpy() / GAUSS_MAX, norm_bound, rms, notes)
        self._vec = c
        return c

    # ---- the answer ----------------------------------------------------------------------
    def estimate(self, layer: FP8Layer, weight_scale: float):
        from fp8stream.calibration.methods import ScaleEstimate, layer_generator

        self._finish_partial()
        src = self.graph.sources[layer.name]
        c = self.model_of(src, layer.in_features)
        bound = float(c.bound.max())
        est = float(c.estimate.max())
        rule = self.settings.rule
        if rule == "max":
            amax = bound if self.mode == "bound" else min(bound, self.margin * est)
            how = "hard bound" if self.mode == "bound" else f"min(bound, {self.margin:g} x Gaussian estimate)"
        else:
            g = layer_generator(self.settings.seed, layer.name)
            n = layer.in_features
            x = torch.from_numpy(c.mean)[None] + torch.from_numpy(c.spread)[None] * torch.randn(
                self.settings.samples, n, generator=g, dtype=torch.float64)
            amax = min(bound, apply_rule(rule, x.float(), self.settings.percentile))
            how = f"{rule} of Gaussian-model samples, capped by the bound"
        warnings = list(dict.fromkeys(c.notes))
        if amax >= EXTREME_AMAX:
            warnings.append(f"extreme estimated range (amax {amax:.3g}): candidate to keep weight-only")
        if est > 0 and bound / est >= 1000:
            warnings.append(f"bound {bound:.3g} is {bound / est:.0f}x the estimate: range uncertain")
        assumption = f"input = {G.describe(src)}; {how}; bound {bound:.4g}, estimate {est:.4g}"
        if not (amax > 0 and math.isfinite(amax)):
            warnings.append("no usable range: scale 1.0")
            return ScaleEstimate(1.0, assumption, warnings)
        return ScaleEstimate(amax / E4M3_MAX, assumption, warnings)


def _finish(c: Channels) -> Channels:
    """Norm bound and rms of a per-channel model (channels independent: the bound is the sum)."""
    c.norm_bound = float(np.sqrt((c.bound ** 2).sum()))
    c.rms = float(np.sqrt((c.mean ** 2 + c.spread ** 2).mean())) if len(c.mean) else 0.0
    return c


def _sinusoid(values: torch.Tensor, dim: int) -> torch.Tensor:
    """cat(cos, sin) of value·exp(-ln(10000)·i/half) (BFL/ComfyUI, diffusers with flip_sin_to_cos)."""
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

    def __init__(self, parts: list[torch.Tensor], scale: float) -> None:
        self.parts, self.scale = parts, scale
        self.shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])

    def blocks(self):
        step = max(1, self.BLOCK_ELEMENTS // self.shape[1])
        for part in self.parts:
            for start in range(0, part.shape[0], step):
                raw = part[start : start + step]
                w = dequantize_rows(raw, torch.float32) if raw.dtype == torch.uint8 else raw.float()
                yield w.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).mul_(self.scale)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W.T"""
        return torch.cat([x @ w.T for w in self.blocks()], dim=-1)

    def apply_t(self, u: torch.Tensor) -> torch.Tensor:
        """W.T @ u for a vector u of length out."""
        out, start = torch.zeros(self.shape[1]), 0
        for w in self.blocks():
            out += w.T @ u[start : start + w.shape[0]]
            start += w.shape[0]
        return out

    def row_norms(self) -> torch.Tensor:
        return torch.cat([w.norm(dim=1) for w in self.blocks()])


def _spectral(w: HeldMatrix, iters: int = 30) -> float:
    """Largest singular value by power iteration (deterministic start), times 1.01 for slack,
    and never above the Frobenius norm. No SVD: on a 3072x768 float64 matrix it took 1-12 s
    and ~500 MB here."""
    v = torch.ones(w.shape[1]) / math.sqrt(w.shape[1])
    s = 0.0
    for _ in range(iters):
        u = w.apply(v)
        s = float(u.norm())
        if s == 0:
            return 0.0
        v = w.apply_t(u / s)
        v = v / v.norm()
    return min(s * 1.01, float(w.row_norms().norm()))
