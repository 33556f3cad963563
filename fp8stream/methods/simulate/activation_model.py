"""The activation model of the weight-aware simulation: what it learns as the data streams past
(producers' row norms, biases, norm affines, held embedders) and, at the tail, the per-channel
model of every layer's input (see simulate_method.py's docstring for the maths). numpy only: what
streams past is kept as numpy (values, raw bytes, row sums; their blocks in any order); on a GPU the
row sums of FP8 rows stay torch tensors there until the tail (the rows are there already)."""

from __future__ import annotations

import functools
import math
from typing import Mapping

import numpy as np

from fp8stream.formats.layers import FP8Layer
from fp8stream.io.dtypes import decode_floats
from fp8stream.io.header import TensorInfo
from fp8stream.methods.simulate import graph as G
from fp8stream.methods.simulate.channels import EXTERNAL_RMS, GAUSS_MAX, Channels, HeldMatrix, external, finish
from fp8stream.methods.simulate.producer_rows import FP8, RowSums, in_row_order
from fp8stream.methods.simulate.vec_model import Embedder, VecAhead, vec_channels
from fp8stream.names.suffixes import BIAS, WEIGHT, WEIGHT_SCALE, layer_of
from fp8stream.scales.fp8_maths import row_sum_squares, row_sum_squares_torch
from fp8stream.scales.layer_warning import LayerWarning, WarningKind


class ActivationModel:
    """Statistics of the tensors a run's layers depend on, and the models made from them."""

    def __init__(self, seed: int, graph: G.Graph, shapes: dict[str, tuple[int, int]], ws_key: dict[str, str | None],
                 need_rows: set[str], held: set[str], external_rms: float = EXTERNAL_RMS) -> None:
        self.seed = seed
        self.external_rms = external_rms  # the assumed rms of model inputs (--assume-input-rms)
        self.graph, self.shapes, self.ws_key = graph, shapes, ws_key
        self.need_rows, self.held = need_rows, held
        self.rowsq: dict[str, list[np.ndarray]] = {}
        self.weights: dict[str, list[np.ndarray]] = {}  # held embedders: raw bytes, uint8 [rows, row_bytes]
        self.weight_dtypes: dict[str, str] = {}  # each held embedder's file dtype
        self.row_starts: dict[str, list[int]] = {}  # observe_weight's row_start of each part
        self.values: dict[str, np.ndarray] = {}  # biases, LN affine, weight scales (float32)
        self.partial: dict[str, RowSums] = {}
        self._cache: dict[object, Channels] = {}
        self._vec: Channels | None = None
        self.vec_ahead: VecAhead | None = None  # SiLU(vec) made while the stream goes on (expect_vec)
        # the rows of each producer whose norms some input's model reads (absent: all of them)
        self.rows_used = rows_used(graph, shapes, need_rows - held)

    def expect_vec(self, waits: dict[str, int], width: int) -> None:
        """Make SiLU(vec) for `width` once `waits` (tensor -> bytes: what it reads) have streamed past."""
        self.vec_ahead = VecAhead(waits, width)

    def observe_tensor(self, info: TensorInfo, chunk)  -> None:
        name = info.name
        if name.endswith(WEIGHT) and len(info.shape) == 2 and layer_of(name) in self.need_rows:
            acc = self.partial.get(name)
            if acc is None:
                acc = self.partial[name] = RowSums(info.dtype, info.shape, layer_of(name) in self.held)
            acc.feed(chunk)
        else:
            prev = self.values.get(name)
            t = decode_floats(chunk, info.dtype)
            self.values[name] = t if prev is None else np.concatenate([prev, t])
        self._arrived(name, len(chunk))

    def _arrived(self, name: str, nbytes: int) -> None:
        if self.vec_ahead is not None and self.vec_ahead.arrived(name, nbytes):
            self.finish_partial({n + WEIGHT for n in self.held})
            self.vec_ahead.start(functools.partial(self._make_vec, self.vec_ahead.width))

    def close(self) -> None:
        """Wait for the thread making SiLU(vec) ahead, if one runs (a run that failed part way)."""
        if self.vec_ahead is not None:
            self.vec_ahead.join()

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        """rows: raw FP8 bytes, a numpy uint8 array on the CPU or a torch tensor on the device."""
        if layer.name not in self.need_rows:
            return
        if isinstance(rows, np.ndarray):
            sums = _sums_of_used_rows(rows, row_start, self.rows_used.get(layer.name))
        else:  # stays on the GPU: no sync per chunk (moved to the host at the tail)
            sums = row_sum_squares_torch(rows)
        self.rowsq.setdefault(layer.name, []).append(sums)
        self.row_starts.setdefault(layer.name, []).append(row_start)
        if layer.name in self.held:
            held = rows.copy() if isinstance(rows, np.ndarray) else rows.cpu().numpy().copy()
            self.weights.setdefault(layer.name, []).append(held)
            self.weight_dtypes[layer.name] = FP8
        self._arrived(layer.weight.name, rows.nbytes)  # numpy's and torch's: bytes

    def _wscale(self, n: str) -> float:
        v = self.values.get(weight_scale_key(self.ws_key, n))
        return float(v.reshape(-1)[0]) if v is not None and v.size else 1.0

    def finish_partial(self, names: set[str] | None = None) -> None:
        """The row sums (and held rows) of the weights that streamed past in chunks: `names`'
        (whole by now), else all."""
        for name, acc in list(self.partial.items()):
            if names is not None and name not in names:
                continue
            n = layer_of(name)
            self.rowsq[n], held = acc.result()
            if acc.hold:
                self.weights[n], self.weight_dtypes[n] = held, acc.dtype
            del self.partial[name]

    def _row_norms(self, n: str) -> np.ndarray | None:
        parts = self.rowsq.get(n)
        if not parts:
            return None
        parts = [p if isinstance(p, np.ndarray) else p.cpu().numpy() for p in in_row_order(self.row_starts, n, parts)]
        return np.sqrt(np.concatenate(parts)) * self._wscale(n)

    def _bias(self, n: str, rows: int) -> np.ndarray:
        b = self.values.get(n + BIAS)
        return np.zeros(rows) if b is None else b.astype(np.float64)

    def _weight(self, n: str) -> "HeldMatrix":
        return HeldMatrix(in_row_order(self.row_starts, n, self.weights[n]), self.weight_dtypes[n], self._wscale(n))

    def _output(self, n: str, rows: str = "all") -> Channels | None:
        """The output of linear n (rows), from its row norms and its own input's model."""
        norms = self._row_norms(n)
        if norms is None or n not in self.shapes:
            return None
        x = self.model_of(self.graph.sources.get(n, G.External("input of an unnamed producer")), self.shapes[n][1])
        sl = row_range(self.shapes[n], rows)
        w, b = norms[sl], self._bias(n, len(norms))[sl]
        return Channels(w * x.norm_bound + np.abs(b), b, w * x.rms, float("nan"), float("nan"), list(x.notes),
                        assumed=x.assumed)

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
            return external(width, src.what, self.external_rms)
        if isinstance(src, G.Norm):
            g = self.values.get(src.weight) if src.weight else None
            b = self.values.get(src.bias) if src.bias else None
            notes = []
            if src.weight and g is None:
                notes.append(LayerWarning(WarningKind.OTHER, f"{src.weight} not in the file: gamma assumed 1"))
            g = np.ones(width) if g is None else np.abs(g.astype(np.float64))
            b = np.zeros(width) if b is None else b.astype(np.float64)
            return finish(Channels(math.sqrt(width - 1) * g + np.abs(b), b, g, 0.0, 0.0, notes))
        if isinstance(src, G.Act):
            y = self._output(src.producer, src.rows)
            if y is None:
                c = external(width, f"{src.producer} statistics missing", self.external_rms)
                return c
            floor = {"gelu": 0.17, "silu": 0.28}.get(src.fn, 0.0)
            y.bound = np.maximum(y.bound, floor)
            if width and len(y.bound) != width:
                return external(width, f"{src.producer} rows do not match the width {width}", self.external_rms)
            return finish(y)
        if isinstance(src, G.Concat):
            parts = [self.model_of(p, 0) for p in src.parts]
            c = Channels(*(np.concatenate([getattr(p, a) for p in parts]) for a in ("bound", "mean", "spread")),
                         0.0, 0.0, [n for p in parts for n in p.notes], assumed=any(p.assumed for p in parts))
            if width and len(c.bound) != width:
                return external(width, f"concatenated parts have {len(c.bound)} channels, not {width}",
                                self.external_rms)
            return finish(c)
        if isinstance(src, G.Vec):
            return self._vec_model(width)
        if isinstance(src, G.AdaLN):
            return self._adaln(src, width)
        raise TypeError(src)

    def _adaln(self, src: G.AdaLN, width: int) -> Channels:
        norms = self._row_norms(src.mod)
        if norms is None:
            c = external(width, f"modulation {src.mod} statistics missing", self.external_rms)
            return c
        z = self.model_of(G.Vec(self.graph.family), self.shapes[src.mod][1])
        b = self._bias(src.mod, len(norms))
        d = len(norms) // src.chunks
        if d != width:
            return external(width, f"{src.mod} has {len(norms)} rows, not {src.chunks} x {width}", self.external_rms)
        extra = np.zeros(len(norms))
        if src.extra_bias and src.extra_bias in self.values:
            extra = self.values[src.extra_bias].astype(np.float64).reshape(-1)[: len(norms)]
        sh, sc = slice(src.shift * d, (src.shift + 1) * d), slice(src.scale * d, (src.scale + 1) * d)
        scale_b = np.abs(1 + b[sc] + extra[sc]) + norms[sc] * z.norm_bound
        shift_b = np.abs(b[sh] + extra[sh]) + norms[sh] * z.norm_bound
        z_est = z.rms * GAUSS_MAX  # |w·z| for z not aligned with w: ||w||·rms(z)·(a few)
        scale_g = np.abs(1 + b[sc] + extra[sc]) + norms[sc] * z_est
        shift_g = np.abs(b[sh] + extra[sh]) + norms[sh] * z_est
        c = Channels(math.sqrt(d - 1) * scale_b + shift_b, shift_g, scale_g, 0.0, 0.0, list(z.notes), assumed=z.assumed)
        return finish(c)

    def _embedder(self, kind: str, first: str, second: str) -> Embedder:
        w1, w2 = self._weight(first), self._weight(second)
        return Embedder(kind, w1, self._bias(first, w1.shape[0]), w2, self._bias(second, w2.shape[0]))

    def _vec_model(self, width: int) -> Channels:
        """SiLU(vec) over the sweep of t (and g), from the held embedders (vec_model.py)."""
        if self._vec is not None and len(self._vec.bound) == width:
            return self._vec
        early = self.vec_ahead.result(width) if self.vec_ahead is not None else None
        self._vec = early if early is not None else self._make_vec(width)
        return self._vec

    def _make_vec(self, width: int) -> Channels:
        terms = [term for term in self.graph.vec_terms if term[1] in self.weights and term[2] in self.weights]
        if terms:  # each embedder made when its turn comes: one embedder's float32 weights at a time
            return vec_channels((self._embedder(*t) for t in terms), width, self.seed, self.external_rms)
        vec = external(width, "conditioning vector (embedders not held)", self.external_rms)
        vec.bound = np.maximum(vec.bound, 0.28)
        return vec


def weight_scale_key(ws_key: Mapping[str, str | None], n: str) -> str:
    """The name of layer n's weight scale: the file's key for its flavour, else the usual one."""
    return ws_key.get(n) or n + WEIGHT_SCALE


def row_range(shape: tuple[int, int], rows: str) -> slice:
    """The rows of a producer [out, d] that an Act source reads (sources.Act.rows)."""
    out, d = shape
    if rows == "qkv_v":
        return slice(2 * d, 3 * d)
    if rows == "mlp":
        return slice(3 * d, out)
    return slice(0, out)


def rows_used(graph: G.Graph, shapes: dict[str, tuple[int, int]],
              producers: set[str]) -> dict[str, list[tuple[int, int]]]:
    """For each producer, the row intervals whose norms the model reads, where that is not all
    of them: an AdaLN reads its shift and scale chunks (not the gate), attention outputs the v
    rows of qkv. The other rows' sums are never computed on the CPU (a third of Flux's)."""
    used: dict[str, list[tuple[int, int]]] = {}
    whole: set[str] = set()

    def visit(src: G.Source) -> None:
        if isinstance(src, G.AdaLN) and src.mod in shapes:
            d = shapes[src.mod][0] // src.chunks
            used.setdefault(src.mod, []).extend((c * d, (c + 1) * d) for c in (src.shift, src.scale))
        elif isinstance(src, G.Act) and src.producer in shapes:
            sl = row_range(shapes[src.producer], src.rows)
            used.setdefault(src.producer, []).append((sl.start, sl.stop))
        elif isinstance(src, G.Concat):
            for part in src.parts:
                visit(part)
        else:
            whole.update(G.producers(src))

    for src in graph.sources.values():
        visit(src)
    return {n: _merged(r) for n, r in used.items() if n in producers and n not in whole}


def _merged(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _sums_of_used_rows(rows: np.ndarray, row_start: int, used: list[tuple[int, int]] | None) -> np.ndarray:
    """Row sums of squares of a block of rows [row_start, ...); NaN for rows nothing reads."""
    if used is None:
        return row_sum_squares(rows)
    sums = np.full(rows.shape[0], np.nan)
    for lo, hi in used:
        a, b = max(lo, row_start) - row_start, min(hi, row_start + rows.shape[0]) - row_start
        if a < b:
            row_sum_squares(rows[a:b], out=sums[a:b])
    return sums
