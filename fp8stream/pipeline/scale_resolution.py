"""Scale resolution: each calibrated layer's final activation scale as values, then reports.

A layer's own scale is a real one already in the file (kept), else the method's estimate; then
layers fed by the same tensor take their group's max; then legacy scales are kept off exactly
1.0 (the legacy loader drops that value). Nothing here mutates a report: reports are built from
the resolved values at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from fp8stream.errors import FP8StreamError
from fp8stream.formats import legacy
from fp8stream.formats.existing_scales import judge_existing_scale
from fp8stream.formats.groups import share_scales, shared_scale_groups
from fp8stream.formats.layers import LEGACY
from fp8stream.formats.plan import LayerPlan
from fp8stream.formats.text_encoders import TEXT_ENCODER_NOTE
from fp8stream.io.dtypes import as_f32
from fp8stream.report import ExcludedReport, LayerReport
from fp8stream.scales.estimate import ASSUMED, ScaleEstimate
from fp8stream.scales.layer_warning import LayerWarning


@dataclass(frozen=True)
class LayerFacts:
    """What the stream (or a dry run's positioned reads) found about one layer's small tensors."""

    weight_scale: float
    existing: list[float] | None  # the scale already in the file, None when there is none
    weight_only: bool  # the input's flag
    out_weight_only: bool | None  # the flag written; None: not known (a dry run of a pipe)
    warnings: tuple[LayerWarning, ...] = ()  # suspicious weights (NaN bytes, all-zero, bad scales)


@dataclass(frozen=True)
class Resolved:
    """A layer's final scale; `scale` None: a dry run, where the method did not run."""

    scale: float | None
    source: str  # new, kept or replaced
    why: str
    method: str
    estimate: ScaleEstimate | None
    group: tuple[str, ...] = ()  # the other layers it shares its input (and scale) with


def to_estimate(plans: list[LayerPlan], facts: Mapping[str, LayerFacts], overwrite: bool) -> dict[str, float]:
    """{layer: weight scale} of the layers whose scale the method must give (not kept ones)."""
    out = {}
    for p in plans:
        f = facts[p.layer.name]
        keep, _ = judge_existing_scale(f.existing, f.weight_scale, f.weight_only, overwrite)
        if not keep:
            out[p.layer.name] = f.weight_scale
    return out


def _own(p: LayerPlan, f: LayerFacts, estimates: Mapping[str, ScaleEstimate] | None, overwrite: bool,
         method: str) -> Resolved:
    keep, why = judge_existing_scale(f.existing, f.weight_scale, f.weight_only, overwrite)
    if keep:
        return Resolved(as_f32(f.existing[0]), "kept", why, "existing", None)
    source = "new" if f.existing is None else "replaced"
    if estimates is None:
        return Resolved(None, source, why + "; dry run: not computed", method, None)
    estimate = estimates[p.layer.name]
    scale = as_f32(estimate.scale)
    if not (scale > 0.0 and scale < float("inf")):
        raise FP8StreamError(f"layer {p.layer.name}: computed scale {scale} is not positive and finite")
    return Resolved(scale, source, why, method, estimate)


def resolve(plans: list[LayerPlan], facts: Mapping[str, LayerFacts], estimates: Mapping[str, ScaleEstimate] | None,
            overwrite: bool, method: str) -> dict[str, Resolved]:
    """Every calibrated layer of the whole model (all shards), in plan order."""
    own = {p.layer.name: _own(p, facts[p.layer.name], estimates, overwrite, method) for p in plans}
    out = dict(own)
    groups = shared_scale_groups(list(own))
    known = {name: r.scale for name, r in own.items() if r.scale is not None}
    shared = share_scales(dict(known), groups)
    for group in groups:
        for name in group:
            r = own[name]
            others = tuple(m for m in group if m != name)
            if any(own[m].scale is None for m in group):  # dry run: the group's max is not known
                out[name] = replace(r, scale=None, group=others)
                continue
            top = max(known[m] for m in shared.get(name, [name]))
            source, why = r.source, r.why
            if top != r.scale and r.source == "kept":
                source, why = "replaced", "raised to its group's max"
            out[name] = replace(r, scale=top, source=source, why=why, group=others)
    for p in plans:
        r = out[p.layer.name]
        if p.out_flavour == LEGACY and r.scale is not None:
            out[p.layer.name] = replace(r, scale=legacy.never_one(r.scale))
    return out


def runs_fp8(p: LayerPlan, out_weight_only: bool | None) -> bool:
    """Whether ComfyUI quantizes this layer's input with our scale after the run."""
    return not p.layer.text_encoder and out_weight_only is False


def layer_reports(plans: list[LayerPlan], facts: Mapping[str, LayerFacts],
                  resolved: Mapping[str, Resolved]) -> list[LayerReport]:
    reports = []
    for p in plans:
        layer, f, r = p.layer, facts[p.layer.name], resolved[p.layer.name]
        notes = [TEXT_ENCODER_NOTE] if layer.text_encoder else []
        if p.weight_only_why:
            notes.append(p.weight_only_why)
        e = r.estimate
        assumption = e.source if e is not None else ("scale from the file" if r.source == "kept" else "")
        out_flag = f.out_weight_only if f.out_weight_only is not None else p.out_weight_only
        reports.append(LayerReport(layer.name, list(layer.weight.shape), r.scale, r.source, r.why, r.method,
                                   assumption, runs_fp8(p, out_flag), list(f.warnings) + list(e.warnings if e else ()),
                                   p.out_flavour, notes, e.amax if e else None, e.margin if e else None,
                                   e.bound if e else None, list(r.group), e.basis if e else ASSUMED))
    return reports


def excluded_reports(plans: list[LayerPlan], out_weight_only: Mapping[str, bool]) -> list[ExcludedReport]:
    out = []
    for p in plans:
        flag = out_weight_only.get(p.layer.name, p.out_weight_only)
        fp8 = None if flag is None else (not flag and not p.layer.text_encoder)
        if p.layer.flavour == "plain" and p.untouched:
            fp8 = False  # no marker: ComfyUI's mixed-precision loader upcasts it
        out.append(ExcludedReport(p.layer.name, p.excluded + (" (untouched)" if p.untouched else ""), fp8))
    return out
