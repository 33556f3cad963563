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
inputs hold; errs high, which FP8 tolerates: see the README); `hybrid` takes the Gaussian estimate
times `--margin`, capped by the bound; `note` is the research note's approach 2 (unit-normal
rows through the layer's own weight: the layer's OUTPUT, kept for comparison only).
Rules: `max` uses the bound (or margin x estimate); `percentile` and `mse` are applied to
seeded synthetic samples drawn from the per-channel Gaussian model (mean, spread), capped by
the bound.

Memory: per producer one float64 per output row (row norms) plus its bias; the held embedders
(in their file dtype; one embedder's two weights decoded to float32 at a time, 47 MB on Flux);
per layer a few vectors of its input width. Speed: one row-norm pass per producer weight byte.
Deterministic: samples come from a CPU generator seeded by (seed, layer name).

torch: the bound (`max`, modes bound and hybrid) is numpy only, so `--device cpu` never imports
torch; `percentile`, `mse` and `note` sample with torch's generator (sampling.py).
"""


from __future__ import annotations

import math
from typing import Mapping

from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import Header, TensorInfo
from fp8stream.methods.interface import CalibrationMethod, MethodPlan, ModelView
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.methods.simulate import graph as G
from fp8stream.methods.simulate.activation_model import ActivationModel, weight_scale_key
from fp8stream.methods.simulate.channels import EXTERNAL_RMS
from fp8stream.names.suffixes import BIAS, WEIGHT, layer_of, weight_scale_of
from fp8stream.scales.estimate import ScaleEstimate
from fp8stream.scales.fp8_maths import E4M3_MAX
from fp8stream.scales.layer_warning import LayerWarning, WarningKind
from fp8stream.scales.margin import NO_RANGE

HELD_ELEMENTS_MAX = 64 << 20
EXTREME_AMAX = 1e4


class WeightAwareMethod:
    """See the module docstring: the activation model a reviewer can check."""

    def __init__(self, settings: CalibrationSettings) -> None:
        self.settings = settings
        self.mode = settings.sim_mode
        self.margin = float(settings.margin)
        self.model: ActivationModel | None = None

    # ---- set-up from the header ----------------------------------------------------------
    def needs_random_access(self, model: ModelView) -> bool:
        return False  # it reads the stream as it passes

    def prepare(self, view: ModelView) -> MethodPlan:
        """The graph of every linear of the model (all shards: family detection, producers),
        whatever the selection (--include/--exclude/presets) of layers that get a scale."""
        header = view.header
        names = {t.name for t in header.tensors}
        linears = {layer_of(t.name): t for t in header.tensors if t.name.endswith(WEIGHT) and len(t.shape) == 2}
        shapes = {n: (t.shape[0], t.shape[1]) for n, t in linears.items()}
        calibrated = {layer.name for layer in view.layers}
        graph = G.build_graph(sorted(set(linears) | calibrated), names)
        # the weight scale's key depends on the flavour (weight_scale, legacy scale_weight, none)
        ws_key: dict[str, str | None] = {n: weight_scale_of(n, names) for n in linears}
        ws_key.update({layer.name: layer.weight_scale for layer in view.layers})
        held = {n for n in graph.held_layers() if n in linears}
        if sum(shapes[n][0] * shapes[n][1] for n in held) > HELD_ELEMENTS_MAX:
            held = set()  # too big to hold: vec falls back to an assumption (reported)
        need_rows: set[str] = set()
        for src in graph.sources.values():
            _collect(src, graph, shapes, need_rows)
        need_rows |= held
        rms = self.settings.assume_input_rms
        self.model = ActivationModel(self.settings.seed, graph, shapes, ws_key, need_rows, held,
                                     EXTERNAL_RMS if rms is None else rms)
        watches = _watches(header, graph, need_rows, ws_key, calibrated)
        read_by_a_layer = any(G.reads_vec(graph.sources[n]) for n in calibrated if n in graph.sources)
        vec = _vec_inputs(header, graph, held, ws_key, shapes, watches, {layer.weight.name for layer in view.layers})
        if vec is not None and read_by_a_layer:
            self.model.expect_vec(*vec)
        return MethodPlan(watches=watches)

    # ---- streaming -----------------------------------------------------------------------
    def observe_tensor(self, info: TensorInfo, chunk) -> None:
        self.model.observe_tensor(info, chunk)

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        self.model.observe_weight(layer, rows, row_start)

    def close(self) -> None:
        """Wait for the thread making SiLU(vec) ahead, if one runs (a run that failed part way)."""
        if self.model is not None:
            self.model.close()

    def weight_done(self, layer: FP8Layer) -> None:
        pass

    # ---- the answer ----------------------------------------------------------------------
    def scales(self, view: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        self.model.finish_partial()
        by_name = {layer.name: layer for layer in view.layers}
        return {name: self._estimate(by_name[name]) for name in weight_scales}

    def bound_now(self, layer: FP8Layer) -> ScaleEstimate | None:
        """`scales`' estimate of `layer` before the stream has shown anything, where its input's
        model needs nothing from it (a sinusoid, a LayerNorm without affine, a model input);
        None where it does (a producer's rows, a norm's weights, the held embedders)."""
        src = self.model.graph.sources[layer.name]
        if G.producers(src) or G.tensors_needed(src) or G.reads_vec(src):
            return None
        return self._estimate(layer)

    def _estimate(self, layer: FP8Layer) -> ScaleEstimate:
        src = self.model.graph.sources[layer.name]
        c = self.model.model_of(src, layer.in_features)
        bound = float(c.bound.max())
        est = float(c.estimate.max())
        rule = self.settings.rule
        margin = None
        if rule == "max":
            amax = bound if self.mode == "bound" else min(bound, self.margin * est)
            how = "hard bound" if self.mode == "bound" else f"min(bound, {self.margin:g} x Gaussian estimate)"
            margin = None if self.mode == "bound" else self.margin
        else:
            import torch

            from fp8stream.methods.simulate.sampling import layer_generator
            from fp8stream.scales.rules import apply_rule

            g = layer_generator(self.settings.seed, layer.name)
            x = torch.from_numpy(c.mean)[None] + torch.from_numpy(c.spread)[None] * torch.randn(
                self.settings.samples, layer.in_features, generator=g, dtype=torch.float64)
            amax = min(bound, apply_rule(rule, x.float(), self.settings.percentile))
            how = f"{rule} of Gaussian-model samples, capped by the bound"
        warnings = list(dict.fromkeys(c.notes))
        if amax >= EXTREME_AMAX:
            warnings.append(LayerWarning(WarningKind.EXTREME_RANGE,
                                         f"extreme estimated range (amax {amax:.3g}): candidate to keep weight-only"))
        if est > 0 and bound / est >= 1000:
            warnings.append(LayerWarning(WarningKind.RANGE_UNCERTAIN,
                                         f"bound {bound:.3g} is {bound / est:.0f}x the estimate: range uncertain"))
        source = f"input = {G.describe(src)}; {how}; bound {bound:.4g}, estimate {est:.4g}"
        if not (amax > 0 and math.isfinite(amax)):
            warnings.append(NO_RANGE)
            return ScaleEstimate(1.0, source, tuple(warnings), bound=bound, assumed=c.assumed)
        return ScaleEstimate(amax / E4M3_MAX, source, tuple(warnings), amax=amax, bound=bound, margin=margin,
                             assumed=c.assumed)


def _collect(src: G.Source, graph: G.Graph, shapes: dict, need_rows: set[str]) -> None:
    """The producer linears (recursively) whose row norms a source's model needs."""
    for p in G.producers(src):
        if p in shapes:
            need_rows.add(p)
            s = graph.sources.get(p)
            if s is not None:
                _collect(s, graph, shapes, need_rows)


def _watches(header: Header, graph: G.Graph, need_rows: set[str], ws_key: dict, calibrated: set[str]) -> frozenset[str]:
    """Every tensor the model reads as it streams past. Calibrated layers' FP8 weights come
    through observe_weight instead; other FP8 producers (excluded, not selected) through here."""
    wanted: set[str] = set()
    for n in need_rows:
        wanted |= {n + WEIGHT, n + BIAS, weight_scale_key(ws_key, n)}
    for src in graph.sources.values():
        wanted |= set(G.tensors_needed(src))
    out = set()
    for info in header.tensors:
        if info.name not in wanted:
            continue
        if info.dtype.startswith("F8_") and (layer_of(info.name) in calibrated or info.dtype != "F8_E4M3"):
            continue
        out.add(info.name)
    return frozenset(out)


def _vec_inputs(header: Header, graph: G.Graph, held: set[str], ws_key: dict, shapes: dict[str, tuple[int, int]],
                watches: frozenset[str], weights: set[str]) -> tuple[dict[str, int], int] | None:
    """(tensor -> bytes, width) of what SiLU(vec) reads, each shown to the method one way as it
    streams (watched, or a calibrated layer's weight: its bytes counted once), and the one width
    the modulations read it at; None where that is not so (then it is made at the tail)."""
    wanted = {key for n in held for key in (n + WEIGHT, n + BIAS, weight_scale_key(ws_key, n))}
    sizes = {info.name: info.nbytes for info in header.tensors if info.name in wanted}
    widths = {shapes[s.mod][1] for s in graph.sources.values() if isinstance(s, G.AdaLN) and s.mod in shapes}
    if not sizes or len(widths) != 1 or any((n in watches) == (n in weights) for n in sizes):
        return None
    return sizes, widths.pop()


def create(settings: CalibrationSettings) -> CalibrationMethod:
    if settings.sim_mode == "note":
        from fp8stream.methods.simulate.note import GaussianOutputMethod

        return GaussianOutputMethod(settings)
    return WeightAwareMethod(settings)
