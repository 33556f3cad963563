"""calibrate's prediction (issue 25): what `fp8stream check OUT` would say of the file it writes,
from the forward pass it runs anyway (methods/forward/prediction.py runs check's streams beside it).

Before the data moves the method is told how ComfyUI will run each FP8 layer of the output, as
far as the plan and the file decide it (`ask`): flags written, layers excluded (weight-only,
their stored scale kept, or dropped where the method gives none), scales kept from the file
(read by name, as a dry run reads them); the other scales are the method's, which the pass
derives as it runs each layer. After the scales are written, the runs are built again from what
was written (`fill`, the same function), and the prediction stands only where every scale the
streams ran a layer with is the one written and every layer ran as it is flagged; else the report
says why there is none. Its report is check's (check_report.build), on the output's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping

from fp8stream.formats.comfy_runtime import WRITTEN_SCALE, LayerRun, StoredValues, run_of, stored_values
from fp8stream.formats.layers import take_inventory
from fp8stream.formats.plan_types import LayerPlan, RewritePlan
from fp8stream.formats.quant_metadata import QuantMetadata
from fp8stream.io.source import TensorSource
from fp8stream.methods.interface import MethodPlan
from fp8stream.pipeline.dry_run import dry_run_facts, dry_run_state
from fp8stream.pipeline.scale_resolution import LayerFacts, Resolved, resolve, runs_fp8
from fp8stream.report import FileReport, LayerReport

if TYPE_CHECKING:
    from fp8stream.pipeline.run import RunSettings

NO_PASS = "the method runs no forward pass"


@dataclass(frozen=True)
class InputRead:
    """IN as ComfyUI reads it: each FP8 weight's values (formats/comfy_runtime.py), and the
    file's quantization metadata."""

    values: dict[str, StoredValues]
    quant_metadata: QuantMetadata | None


def ask(method_plan: MethodPlan, files: list[RewritePlan], layers: list[LayerPlan], source: TensorSource | None,
        settings: RunSettings, method: str) -> InputRead | None:
    """Tell the method's pass how the output will run (where it predicts); returns IN as
    ComfyUI reads it, None where nothing is asked."""
    if method_plan.prediction is None or source is None:
        return None
    calibrated = [p for p in layers if p.calibrated]
    state = dry_run_state(files, source, settings.keep_weight_only)
    facts = dry_run_facts(calibrated, state)
    known = resolve(calibrated, facts, None, settings.overwrite_scales, method)  # the scales kept from the file
    inventory = take_inventory(source.header)
    read = InputRead({layer.weight.name: stored_values(layer, source.header, source) for layer in inventory.layers},
                     inventory.quant_metadata)
    runs = output_runs(layers, facts, known, read)
    # the pass gives the scales not known yet; a layer ComfyUI stops on keeps its NaN
    from_pass = [p.layer.weight.name for p in calibrated if known[p.layer.name].scale is None]
    method_plan.prediction.ask(runs, frozenset(w for w in from_pass if not runs[w].stops))
    return read


def output_runs(layers: list[LayerPlan], facts: Mapping[str, LayerFacts], resolved: Mapping[str, Resolved],
                read: InputRead) -> dict[str, LayerRun]:
    """How ComfyUI runs each FP8 layer of the output, by weight name, in layer order: what
    `check` reads from it (formats/comfy_runtime.run_of), from what the run writes and IN's
    values. A calibrated layer's scale None: not known yet (the method's). An excluded layer is
    flagged weight-only (formats/plan.py), its stored scale kept unless the method gives it
    none; one left untouched runs as it did."""
    out = {}
    for p in layers:
        layer, values = p.layer, read.values[p.layer.weight.name]
        if p.calibrated:
            f, scale = facts[layer.name], resolved[layer.name].scale
            flag = f.out_weight_only if f.out_weight_only is not None else p.out_weight_only
            values = StoredValues(f.weight_scale, None if scale is None else [scale],
                                  None if scale is None else WRITTEN_SCALE, not runs_fp8(p, flag))
        elif not p.untouched:
            values = replace(values, flagged=True) if not p.drops_input_scale else \
                replace(values, flagged=True, stored=None, entry=None)
        out[layer.weight.name] = run_of(layer, values, read.quant_metadata)
    return out


def fill(report: FileReport, method_plan: MethodPlan, read: InputRead | None, layers: list[LayerPlan],
         facts: Mapping[str, LayerFacts], resolved: Mapping[str, Resolved]) -> None:
    """The report's prediction, once the scales are written (or why there is none)."""
    from fp8stream.check_report import build

    if method_plan.prediction is None or read is None:
        report.prediction_reason = method_plan.no_prediction or NO_PASS
        return
    outcome = method_plan.prediction.result()
    written = output_runs(layers, facts, resolved, read)
    why = outcome.reason if outcome.comparison is None else _not_as_written(outcome, written, report)
    if why is not None:
        report.prediction_reason = why
        report.notes.append(f"no prediction: {why}")
        return
    report.prediction = build(report.output or "-", written, outcome.comparison, None)


def _not_as_written(outcome, written: Mapping[str, LayerRun], report: FileReport) -> str | None:
    """Why the streams did not run the file as written (None: they did): a layer flagged
    otherwise, or a scale that was not final when they ran it."""
    reports = {layer.name: layer for layer in report.layers}
    for weight, run in written.items():
        asked = outcome.runs.get(weight)
        if asked is not None and asked.weight_only != run.weight_only:
            return f"{run.layer} is written {'weight-only' if run.weight_only else 'FP8'}, but ran otherwise"
        for used in outcome.used.get(weight, ()):
            if not _same(used, run.scale):
                ran = "no scale known yet" if used is None else f"{used:.6g}"
                return (f"{run.layer}: written input_scale {run.scale:.6g}, but the streams ran it with {ran} "
                        f"({_settled(reports.get(run.layer), weight in outcome.repeated)})")
    return None


def _same(used: float | None, written: float) -> bool:
    """The scale the streams used is the one written (NaN: a layer ComfyUI stops on, both)."""
    return used is not None and (used == written or (math.isnan(used) and math.isnan(written)))


def _settled(layer: LayerReport | None, repeated: bool) -> str:
    """What settled a layer's scale after the streams had run it."""
    if repeated:
        return "its Linear runs more than once in a forward pass"
    if layer is not None and layer.shares_input_with:
        return f"its scale is the max of its shared-scale group, with {', '.join(layer.shares_input_with)}"
    return f"its scale was settled after the pass ran it: {layer.assumption if layer else 'the hard bound'}"
