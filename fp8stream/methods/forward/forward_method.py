"""`--method forward`: each FP8 linear's input range from a streaming synthetic forward pass
through the checkpoint's own weights (fp8stream.methods.forward.forward_pass), times a safety margin, capped by
the hard bound of `--method simulate` where that bound is a proof.

    scale = min(margin x forward amax, hard bound) / 448

The margin (`--forward-margin`; default 3 for the DiTs, 2 for text encoders, below), measured
on the harness's trained tiny Flux, SD3 and Wan and the Flux rescalings split256 / outlier50 (16
samples x 20 Euler steps, real activations): real input amax / forward amax is 0.37-1.77 over
every layer (attention outputs use the mix bound of engine.py). Margin 2 clips none of them with
13% headroom; 3 leaves 70% for models we have not seen, and a scale 3x too large only moves the
smallest values 1.6 binades towards FP8's subnormals, where one too small clips
(docs/scales.md). The bound caps only when it assumes nothing about model inputs (not
`ScaleEstimate.assumed`).

Text encoders (the families of kind "text") run on what they really read, token ids through their own
embedding table, so their forward amax is close to the real one (MiniLM: within 3% on most
layers, real / forward at most 1.37; docs/methods.md), and a layer's output is often carried by
a few recurring outliers (massive activations of the first and separator tokens, near the same
value for every input) whose FP8 rounding decides the layer's error. Scaling by a power of two
moves every normal value by whole binades and keeps its mantissa, so its rounding stays as at
amax/448 (where the amax itself is exact: 448 = 1.75 x 2^8); another factor moves the outlier to
another rounding (MiniLM's FFN down-projections at 1.05x the real max: 3-9 dB below dynamic
scaling, at 3x: 2.5-12 dB, at 1x and 2x: nothing). So text encoders take margin 2, and a
power-of-two margin's cap by the bound is rounded up to the next power-of-two multiple of the
amax (never below the bound, so it still clips nothing; at most one binade above it).

Layers the pass cannot reach (family unknown, converter mismatch, a layer outside the model
code) get the hard bound when it is a proof from the file alone; when it would rest on an
assumption about a model input, the layer is kept weight-only (decided in `prepare`, from the
header) unless `--assume-input-rms R` opts in to that assumption. Which layers are the
conditioning path (kept weight-only, its measured scale written beside the flag for runtimes
that read the scale and not the flag, see _conditioning) is decided from the header too, by
running the model once on meta tensors (methods/forward/conditioning.py), so the output layout is
fixed before any weight is read and the pass runs once, by positioned reads: before a copy that
takes its bytes from them (`ModelView.copy_takes_reads`), else on a GPU beside it, else after.
Model code that cannot run on meta tensors runs the pass in prepare() instead, before the
header (HiDream's MoE routing, Lumina 2, HunyuanVideo 1.5's `.item()`), as its result decides
the layout. A pipe or a zstd stream is first spooled to a temporary file by the rewrite
(pipeline/spool.py), the pass prepared from its header kept; with --no-spool it is not, and
every layer gets the bound (or stays weight-only where the bound rests on an assumption),
each saying why.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping

from fp8stream.formats.layers import FP8Layer
from fp8stream.io.dtypes import as_f32
from fp8stream.io.header import TensorInfo
from fp8stream.methods.forward.beside import BesideTheCopy
from fp8stream.methods.forward.prediction_plan import none_because
from fp8stream.methods.interface import MethodPlan, ModelView
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.methods.simulate import graph as G
from fp8stream.methods.simulate.simulate_method import WeightAwareMethod
from fp8stream.scales.estimate import ASSUMED, FORWARD_PASS, ScaleEstimate
from fp8stream.scales.layer_warning import LayerWarning, WarningKind
from fp8stream.scales.margin import with_margin

DIT_MARGIN = 3.0  # the default margin of the DiT families
TEXT_MARGIN = 2.0  # the default margin of the text-encoder families (a power of two: see above)
NO_SPOOL = "the input is a stream and --no-spool was given"
UNDECIDED = ("the forward pass decides whether it stays weight-only (the model code cannot run on meta tensors, "
             "so a dry run cannot tell)")
FOLLOWS_STEP = ", following the sampling step's time"  # in the report of such a layer


class ForwardMethod:
    """The CalibrationMethod of `--method forward` (fp8stream/methods/interface.py)."""

    def __init__(self, settings: CalibrationSettings, prepared=None) -> None:
        """`prepared`: the forward pass already prepared from this model's header (by `auto`)."""
        self.settings = settings
        self.margin = settings.forward_margin  # None: the family's default (margin())
        self.bound = WeightAwareMethod(dataclasses.replace(settings, sim_mode="bound", rule="max"))
        self.prepared = prepared
        self.result = None
        self.beside: BesideTheCopy | None = None  # the pass running while the copy streams
        self.unreached = WarningKind.OTHER  # what a layer the pass missed is warned as (--no-spool: its own kind)
        self.request = None  # the prediction's streams run with the pass (prediction.Request), where asked
        self._by_weight: dict[str, FP8Layer] = {}  # the layers it may ask a scale of, by weight
        self._bounds: dict[str, ScaleEstimate] = {}  # the bound's estimates, once known before the pass

    def needs_random_access(self, model: ModelView) -> bool:
        """A stream: read by name (spooled) where the pass can run, not with --no-spool."""
        return self._from_header(model).reason is None and self.settings.spool

    def _from_header(self, model: ModelView):
        """The pass prepared from the header (the model's mapping: seconds), once."""
        from fp8stream.methods.forward.diffusers_import import import_diffusers
        from fp8stream.methods.forward.forward_pass import prepare

        import_diffusers()  # one line saying how to install it, before any output exists
        self.prepared = self.prepared or prepare(model.header)
        return self.prepared

    def prepare(self, model: ModelView) -> MethodPlan:
        from fp8stream.methods.forward.forward_pass import run

        self._from_header(model)
        bound_plan = self.bound.prepare(model)
        if model.source is None and not self.settings.spool:  # every layer: the bound, or weight-only
            self.prepared = dataclasses.replace(self.prepared, reason=NO_SPOOL, reached=frozenset())
            self.unreached = WarningKind.NO_SPOOL
        weight_only = self._unreachable(model)
        # a dry run decides as the run would, a stream's too (the run spools it first)
        runs = (model.source is not None or model.dry_run) and self.prepared.reason is None
        order, per_step, undecided = self._decide_from_header(model, weight_only) if runs else ((), frozenset(), {})
        flagged = {}
        if runs and self.settings.forward_conditioning == "weight-only":
            flagged = self._conditioning(model, weight_only, order, per_step)
        if weight_only:
            # The layers given no scale no longer stream past as calibrated weights: the bound's
            # model must watch them as producers instead, or its conditioning vector lacks them.
            kept = [layer for layer in model.layers if layer.name not in weight_only]
            bound_plan = self.bound.prepare(ModelView(model.header, kept, model.source))
        notes = () if self.prepared.reason is None else (f"forward pass: {self.prepared.reason}",)
        reads = runs and self.result is None and model.source is not None and not model.dry_run
        no_prediction = none_because(self.settings.predict, self.prepared.reason, model.dry_run, reads,
                                     self.result is not None)
        if no_prediction is None:
            from fp8stream.methods.forward.prediction import Request

            self.request = Request(self.scale_now)
            self._by_weight = {layer.weight.name: layer for layer in model.layers}
        elif self.settings.predict and self.result is not None:  # asked for, and the pass ran in prepare: said
            notes += (f"no prediction: {no_prediction}",)
        if reads and not model.copy_takes_reads and beside_the_copy(self.settings):
            beside = dataclasses.replace(self._pass_settings(model), bar_line=1)
            source, prepared = model.source, self.prepared
            self.beside = BesideTheCopy(lambda stop: run(source, prepared, beside, stop))
        read_weights = functools.partial(self._read_weights, model) if reads and model.copy_takes_reads else None
        return MethodPlan(weight_only=weight_only, scaled_weight_only=flagged, undecided=undecided,
                          watches=bound_plan.watches, rows=True, notes=notes, read_weights=read_weights,
                          prediction=self.request, no_prediction=no_prediction or "")

    def _pass_settings(self, model: ModelView):
        """The pass's settings, the prediction's streams with it where there is one."""
        from fp8stream.methods.forward.forward_pass import PassSettings

        return dataclasses.replace(PassSettings.of(self.settings, model.progress), more_streams=self.request)

    def _decide_from_header(self, model: ModelView, weight_only: dict[str, str]):
        """(the conditioning path's weights in execution order, those that follow the step's
        time, the layers a dry run cannot decide), adding to `weight_only` the layers no input
        reaches. From the meta pass where the model code runs on meta tensors; else the pass
        runs now, before the header (a dry run runs none and names the layers it leaves open)."""
        from fp8stream.methods.forward.conditioning import from_shapes
        from fp8stream.methods.forward.forward_pass import PassSettings, run

        path = from_shapes(self.prepared)
        if path is not None:  # a Linear of the model code the meta pass never ran gets no input in the pass either
            weight_only.update(self._unseen(model, weight_only, lambda weight: weight in path.ran))
            return path.order, path.per_step, {}
        if model.dry_run:
            return (), frozenset(), {layer.name: UNDECIDED for layer in model.layers if layer.name not in weight_only}
        # The model code cannot run on meta tensors (it needs values: an MoE's routing,
        # HunyuanVideo 1.5's .item()), so the pass runs now, before the header: which layers
        # it finds on the conditioning path, and which no input reached, decide the layout.
        # Without the trace of the step's time, they are ranked by execution order alone.
        self.result = run(model.source, self.prepared, PassSettings.of(self.settings, model.progress))
        weight_only.update(self._unseen(model, weight_only, self.result.reached))
        return tuple(self.result.per_sample), frozenset(), {}

    def _unreachable(self, model: ModelView) -> dict[str, str]:
        """Layers the pass cannot reach whose bound would rest on an assumed model input."""
        why = f"not reached by the forward pass ({self._why()})"
        return self._no_proof(model, {}, why, lambda weight: weight not in self.prepared.reached)

    def _unseen(self, model: ModelView, already: Mapping[str, str], reached) -> dict[str, str]:
        """Layers in the model code that no input reaches in the pass (`reached(weight)` false:
        an MoE expert no synthetic token was routed to, a branch the inputs do not take): kept
        weight-only as the unreachable ones are."""
        why = "no input reached it in the forward pass (an MoE expert no synthetic token was routed to, say)"
        return self._no_proof(model, already, why,
                              lambda weight: weight in self.prepared.reached and not reached(weight))

    def _no_proof(self, model: ModelView, already: Mapping[str, str], why: str, missed) -> dict[str, str]:
        """The layers `missed(weight name)` selects whose bound would rest on an assumed model
        input: weight-only, rather than scaled from a guess (unless --assume-input-rms)."""
        if self.settings.assume_input_rms is not None:
            return {}
        graph = self.bound.model.graph
        reason = (f"{why} and no bound holds without an assumption about the model's inputs; "
                  "opt in with --assume-input-rms R")
        return {layer.name: reason for layer in model.layers
                if layer.name not in already and missed(layer.weight.name) and G.rests_on_input(graph, layer.name)}

    def _conditioning(self, model: ModelView, weight_only: Mapping[str, str], order: tuple[str, ...],
                      per_step: frozenset[str]) -> dict[str, str]:
        """The conditioning path (layers that read one vector per sample: timestep, guidance and
        pooled-text embedders, AdaLN modulation; `order`: their weights in execution order,
        `per_step`: those that follow the step's time) is kept weight-only: each call is a single
        vector, which dynamic scaling fits exactly and a static scale cannot, and FP8 activations
        save nothing on a few rows. At most a quarter of the layers in all, so FP8 stays the
        rule: first those whose vector follows the sampling step's time (the timestep embedder,
        every modulation: their range changes at every step, which dynamic scaling follows and
        one static scale cannot, the real max included), the last to run first; then those that
        read only the guidance or the pooled text, the same vector all through a run
        (methods/forward/conditioning.py). Decided from the header (the meta pass), so the pass can run
        after (or beside) the copy; where the model code cannot run on meta tensors, from the
        pass, by execution order alone (no trace of the step's time there)."""
        calibrated = {layer.weight.name: layer for layer in model.layers if layer.name not in weight_only}
        ranked = [w for w in reversed(order) if w in per_step] + [w for w in reversed(order) if w not in per_step]
        candidates = [calibrated[w] for w in ranked if w in calibrated]
        room = max(0, len(model.layers) // 4 - len(weight_only))
        return {layer.name: ("conditioning path (one vector per sample"
                             f"{FOLLOWS_STEP if layer.weight.name in per_step else ''}"
                             ", which one static scale cannot fit as dynamic scaling does): weight-only, its measured "
                             "scale written beside the flag; --forward-conditioning fp8 to run it in FP8")
                for layer in candidates[:room]}

    def _read_weights(self, model: ModelView) -> None:
        """MethodPlan.read_weights: the pass now, before the copy, which takes each weight from
        its reads (on any device, where `model.copy_takes_reads`). Once."""
        from fp8stream.methods.forward.forward_pass import run

        if self.result is None:
            self.result = run(model.source, self.prepared, self._pass_settings(model))

    def observe_tensor(self, info: TensorInfo, chunk) -> None:
        self.bound.observe_tensor(info, chunk)

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        self.bound.observe_weight(layer, rows, row_start)

    def weight_done(self, layer: FP8Layer) -> None:
        self.bound.weight_done(layer)

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        from fp8stream.methods.forward.forward_pass import run

        bounds = self._bounds = self.bound.scales(model, weight_scales)
        if self.beside is not None:
            self.result = self.beside.result()
        elif self.result is None:  # the pass runs now (or, when it cannot run, says why: the bound)
            self.result = run(model.source, self.prepared, self._pass_settings(model))
        by_name = {layer.name: layer for layer in model.layers}
        return {name: self._estimate(by_name[name], bounds[name]) for name in weight_scales}

    def close(self) -> None:
        """Stop the pass beside the copy, if one runs (a run that failed part way), and wait
        for its thread and the bound's, so nothing of this run outlives it."""
        if self.beside is not None:
            self.beside.stop()
            self.beside = None
        self.bound.close()

    def _why(self) -> str:
        return self.prepared.reason or "a layer outside the model code"

    def _estimate(self, layer: FP8Layer, b: ScaleEstimate) -> ScaleEstimate:
        seen = self.result.amax.get(layer.weight.name) if self.result.reached(layer.weight.name) else None
        if seen is None or seen <= 0.0:
            why = self._why() if seen is None else "its input was all zero in the forward pass"
            kind = WarningKind.ZERO_INPUT if seen is not None else self.unreached
            warnings = (LayerWarning(kind, f"not reached by the forward pass ({why}): hard bound"),) + b.warnings
            return dataclasses.replace(b, source=f"hard bound (simulate); {b.source}", warnings=warnings)
        return self._from_amax(seen, self.result.family, b)

    def _from_amax(self, seen: float, family: str | None, b: ScaleEstimate | None) -> ScaleEstimate:
        """A reached layer's estimate from its forward amax `seen` (> 0), capped by the bound `b`
        where that is a proof; no usable range (scale 1.0) has no forward pass figure behind it,
        so its basis is "assumed"."""
        e = with_margin(seen, self.margin_for(family), b, "forward amax", align_cap=True, basis=ASSUMED)
        return e if e.amax is None else dataclasses.replace(e, source=f"{family} {e.source}", basis=FORWARD_PASS)

    def scale_now(self, weight: str, seen: float | None) -> float | None:
        """The scale `scales` writes for `weight`'s layer if its forward amax is `seen`, asked as
        the pass runs (calibrate's prediction); capped by the bound where that is known by then
        (after a streamed copy; else only where it needs no data: bound_now). None where the
        layer gets the bound (no amax, zero or not finite)."""
        layer = self._by_weight.get(weight)
        if layer is None or seen is None or not 0.0 < seen < math.inf:
            return None
        b = self._bounds[layer.name] if layer.name in self._bounds else self.bound.bound_now(layer)
        return as_f32(self._from_amax(seen, self.prepared.detection.family, b).scale)

    def margin_for(self, family: str | None) -> float:
        """--forward-margin, else the family's default (text encoders: TEXT_MARGIN)."""
        from fp8stream.families import by_name

        if self.margin is not None:
            return float(self.margin)
        return TEXT_MARGIN if family is not None and by_name(family).kind == "text" else DIT_MARGIN


def beside_the_copy(settings: CalibrationSettings) -> bool:
    """Where the copy streams (stdout, zstd, --verify, a URL): the pass beside it, not after."""
    return settings.device == "cuda"


def create(settings: CalibrationSettings) -> ForwardMethod:
    return ForwardMethod(settings)
