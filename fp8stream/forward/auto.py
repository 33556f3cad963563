"""`--method auto` (the default): the forward pass where it can run, the bound method elsewhere.

The forward pass (method.py) needs three things the bound method does not: random access to the
input (a file or a sharded folder; a pipe or a zstd stream is spooled to a temporary file for
it, pipeline/spool.py, unless --no-spool), diffusers, and a model family whose diffusers class
and converter map the file completely. Where all three hold, `auto` is `--method forward`;
otherwise it is `--method simulate --sim-mode bound` exactly as before, with one report note
saying which was missing and how to get the forward pass (with --no-spool, each layer too).
Which one ran is recorded in the output's metadata (`fp8stream.calibration`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from fp8stream.calibration.interface import CalibrationMethod, MethodPlan, ModelView, ScaleEstimate
from fp8stream.calibration.settings import CalibrationSettings
from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import TensorInfo


NO_SPOOL = "the input is a stream and --no-spool was given (without it, it is spooled to a temporary file)"


class AutoMethod:
    """Delegates every call to the forward method or to the bound method, chosen in prepare()."""

    def __init__(self, settings: CalibrationSettings) -> None:
        self.settings = settings
        self.inner: CalibrationMethod | None = None
        self.chosen = ""
        self.why: str | None = None

    def prepare(self, model: ModelView) -> MethodPlan:
        why, prepared = _forward_or_why_not(model, self.settings.spool)
        if why is None:
            from fp8stream.forward.method import ForwardMethod

            forward = dataclasses.replace(self.settings, method="forward")
            self.inner, self.chosen = ForwardMethod(forward, prepared), "forward"
            return self.inner.prepare(model)
        from fp8stream.calibration.simulate import WeightAwareMethod

        self.why = why
        bound = dataclasses.replace(self.settings, method="simulate", sim_mode="bound")
        self.inner, self.chosen = WeightAwareMethod(bound), "simulate"
        plan = self.inner.prepare(model)
        note = f"--method auto used the bound method (simulate): {why}"
        return dataclasses.replace(plan, notes=plan.notes + (note,))

    def _per_layer(self, estimates: dict[str, ScaleEstimate]) -> dict[str, ScaleEstimate]:
        """--no-spool on a stream: each layer says that it got the bound, not the forward pass."""
        if self.why != NO_SPOOL:
            return estimates
        warning = "forward pass not run: " + NO_SPOOL
        return {n: dataclasses.replace(e, warnings=e.warnings + (warning,)) for n, e in estimates.items()}

    def observe_tensor(self, info: TensorInfo, chunk) -> None:
        self.inner.observe_tensor(info, chunk)

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        self.inner.observe_weight(layer, rows, row_start)

    def weight_done(self, layer: FP8Layer) -> None:
        self.inner.weight_done(layer)

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        return self._per_layer(self.inner.scales(model, weight_scales))


def _forward_or_why_not(model: ModelView, spool: bool):
    """(None, the forward pass prepared from the header) when it can run, else (why not, None).
    On a stream it can run once spooled: the forward method then asks for random access."""
    if model.source is None and not spool:
        return NO_SPOOL, None
    from fp8stream.forward.run import ForwardUnavailable, prepare

    try:  # the family from key names first: diffusers is imported only for one it knows
        prepared = prepare(model.header)
    except ForwardUnavailable:
        return "diffusers is not installed (pip install fp8stream[forward] for the forward pass)", None
    if prepared.reason is not None:
        return f"the forward pass cannot run: {prepared.reason}", None
    return None, prepared


def create(settings: CalibrationSettings) -> AutoMethod:
    return AutoMethod(settings)
