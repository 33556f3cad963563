"""`--method auto` (the default): the forward pass where it can run, the bound method elsewhere.

The forward pass (forward/forward_method.py) needs three things the bound method does not: random access to the
input (a file or a sharded folder; a pipe or a zstd stream is spooled to a temporary file for
it, pipeline/spool.py, unless --no-spool), diffusers, and a model family whose diffusers class
and converter map the file completely. Where all three hold, `auto` is `--method forward`;
otherwise it is `--method simulate --sim-mode bound` exactly as before, with one report note
saying which was missing and how to get the forward pass (with --no-spool, each layer too),
where the bound method's producer graph knows the family (a family's `graph`, methods/simulate/graph.py). Where neither
runs (a family not recognised, or one with neither graph nor runnable forward pass), every
bound would rest on an assumed input range: no layer is scaled, all are written weight-only,
the report says so in one note and the CLI exits 5 ("written, no layer scaled").
Which one ran is recorded in the output's metadata (`fp8stream.calibration`).
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Mapping

from fp8stream.families import by_name
from fp8stream.families.detect import detect, header_shapes
from fp8stream.formats.existing_scales import judge_existing_scale
from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import TensorInfo
from fp8stream.methods.forward.forward_method import NO_SPOOL
from fp8stream.methods.interface import CalibrationMethod, MethodPlan, ModelView
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.scales.estimate import ScaleEstimate
from fp8stream.scales.layer_warning import LayerWarning, WarningKind

# why auto ran the bound on a stream: the forward method's reason, and what happens without the flag
NO_SPOOL_AUTO = f"{NO_SPOOL} (without it, it is spooled to a temporary file)"
NO_GUESS = "no scale without a guess (--method simulate or --assume-input-rms R to opt in)"
NO_GUESS_NOTE = ("every FP8 layer kept weight-only, no scale from a guess; --method simulate gives bound scales "
                 "that assume inputs of rms <= 2, --assume-input-rms R another range")


class AutoMethod:
    """Delegates every call to the forward method or to the bound method, chosen from the header once."""

    def __init__(self, settings: CalibrationSettings) -> None:
        self.settings = settings
        self.inner: CalibrationMethod | None = None
        self.chosen = ""
        self.no_spool = False  # the bound ran because --no-spool kept a stream from the forward pass
        self._choice = None  # (the family found, why the forward pass cannot run, or None and it prepared)

    def needs_random_access(self, model: ModelView) -> bool:
        """A stream: the forward pass reads it by name (spooled) where it can run; the choice is kept."""
        return self._choose(model)[1] is None

    def _choose(self, model: ModelView):
        """(the family found, why the forward pass cannot run, the forward pass prepared): from the
        header, once (a stream's needs_random_access decides before prepare does)."""
        if self._choice is None:
            found = detect(header_shapes(model.header))
            if found is None and self.settings.assume_input_rms is None:
                self._choice = (found, "model family not recognised", None)
            elif model.source is None and not self.settings.spool:
                self._choice = (found, NO_SPOOL_AUTO, None)
            else:
                self._choice = (found, *_forward_or_why_not(model))
        return self._choice

    def prepare(self, model: ModelView) -> MethodPlan:
        found, why, prepared = self._choose(model)
        guess_ok = self.settings.assume_input_rms is not None
        if found is None and not guess_ok:
            return self._no_guess(model, why)
        no_spool = model.source is None and not self.settings.spool
        if why is None:
            from fp8stream.methods.forward.forward_method import ForwardMethod

            forward = dataclasses.replace(self.settings, method="forward")
            self.inner, self.chosen = ForwardMethod(forward, prepared), "forward"
            return self.inner.prepare(model)
        if found is not None and by_name(found.family).graph is None and not guess_ok:
            return self._no_guess(model, f"{found.variant}: {why}, and no producer graph knows this family")
        from fp8stream.methods.simulate.simulate_method import WeightAwareMethod

        self.no_spool = no_spool
        bound = dataclasses.replace(self.settings, method="simulate", sim_mode="bound")
        self.inner, self.chosen = WeightAwareMethod(bound), "simulate"
        plan = self.inner.prepare(model)
        note = f"--method auto used the bound method (simulate): {why}"
        return dataclasses.replace(plan, notes=plan.notes + (note,), no_prediction=note)

    def _per_layer(self, estimates: dict[str, ScaleEstimate]) -> dict[str, ScaleEstimate]:
        """--no-spool on a stream: each layer says that it got the bound, not the forward pass."""
        if not self.no_spool:
            return estimates
        warning = LayerWarning(WarningKind.NO_SPOOL, "forward pass not run: " + NO_SPOOL_AUTO)
        return {n: dataclasses.replace(e, warnings=e.warnings + (warning,)) for n, e in estimates.items()}

    def _no_guess(self, model: ModelView, what: str) -> MethodPlan:
        """Neither the forward pass nor a producer graph: every bound would rest on an assumed
        input range. No guess by default: every layer is written weight-only (exit code 5),
        except those whose real scale the file already holds (kept, as everywhere). A legacy
        scaled_fp8 file, whose format has no per-layer flag, is then kept weight-only whole,
        through its marker (formats/plan.py)."""
        from fp8stream.methods.simulate.simulate_method import WeightAwareMethod

        kept = [layer for layer in model.layers if _may_hold_a_real_scale(model.source, layer)]
        self.inner, self.chosen = WeightAwareMethod(dataclasses.replace(self.settings, method="simulate")), "none"
        plan = self.inner.prepare(dataclasses.replace(model, layers=kept))
        names = {layer.name for layer in kept}
        return dataclasses.replace(plan, weight_only={layer.name: f"{what}: {NO_GUESS}" for layer in model.layers
                                                      if layer.name not in names},
                                   notes=plan.notes + (f"{what}: {NO_GUESS_NOTE}",), no_prediction=what)

    def observe_tensor(self, info: TensorInfo, chunk) -> None:
        self.inner.observe_tensor(info, chunk)

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        self.inner.observe_weight(layer, rows, row_start)

    def weight_done(self, layer: FP8Layer) -> None:
        self.inner.weight_done(layer)

    def close(self) -> None:
        """Close the chosen method; none yet when prepare() was interrupted before choosing."""
        if self.inner is not None:
            self.inner.close()

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        return self._per_layer(self.inner.scales(model, weight_scales))


def _forward_or_why_not(model: ModelView):
    """(None, the forward pass prepared from the header) when it can run, else (why not, None).
    On a stream it can run once spooled: the forward method then asks for random access."""
    from fp8stream.methods.forward.diffusers_import import ForwardUnavailable
    from fp8stream.methods.forward.forward_pass import prepare

    try:  # the family from key names first: diffusers is imported only for one it knows
        prepared = prepare(model.header)
    except ForwardUnavailable as e:  # not installed, or cannot be imported: the message says which
        return str(e), None
    if prepared.reason is not None:
        return f"the forward pass cannot run: {prepared.reason}", None
    return None, prepared


def _may_hold_a_real_scale(source, layer: FP8Layer) -> bool:
    """Whether the layer's input scale in the file is a real one to keep (read now: one F32
    scalar); a stream cannot be read ahead, so there any scale present may be."""
    if layer.existing_input_scale is None:
        return False
    if source is None:
        return True
    value, weight_scale = _f32(source, layer.existing_input_scale), _f32(source, layer.weight_scale)
    keep, _ = judge_existing_scale(None if value is None else [value], 1.0 if weight_scale is None else weight_scale,
                                   bool(layer.weight_only), overwrite=False)
    return keep


def _f32(source, name: str | None) -> float | None:
    info = source.info(name) if name else None
    if info is None or info.dtype != "F32" or info.numel != 1:
        return None
    return struct.unpack("<f", source.read_rows(name, 0, 1))[0]


def create(settings: CalibrationSettings) -> AutoMethod:
    return AutoMethod(settings)
