"""`fp8stream check`'s report as plain data: the verdict line, the worst layers (every layer with
--verbose), one JSON object with everything (--json).

The thresholds are here, in one place:
- A layer clips when more than CLIPPED_SHARE of its (full-precision) input values lie beyond
  448 x input_scale: issue 25's bar for real inputs (none clipping > 0.1%); below it the few
  clipped values are outliers that cost little, above it clipping starts to set the layer's error.
- UNUSABLE_DB: the end-to-end SQNR below which we call the file unusable in ComfyUI's fast FP8
  path. Dynamic FP8 gives 29-36 dB on the trained DiTs of the harness (docs/quality.md), files
  whose images users report as noise measure a few dB; 20 dB (an error of a tenth of the
  output's rms at every step) lies well clear of both.
- BEHIND_DB: a file more than this below dynamic FP8 end to end is called behind it and its
  worst layer named; one run's figure moves by about a dB with the inputs drawn (issue 25), so
  a smaller gap is within noise.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fp8stream.formats.comfy_runtime import LayerRun
from fp8stream.formats.existing_scales import usable_scale
from fp8stream.report import plural
from fp8stream.scales.fp8_maths import E4M3_MAX

if TYPE_CHECKING:  # torch: imported by the run, not by --help
    from fp8stream.methods.forward.comparison import Comparison, LayerFigures

CLIPPED_SHARE = 1e-3
UNUSABLE_DB = 20.0
BEHIND_DB = 3.0
WORST_SHOWN = 10  # layers in the default table


def sqnr_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise); inf where there is no noise, NaN where the noise is NaN."""
    if noise <= 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-300) / noise)


@dataclass
class Totals:
    """A stream's end-to-end SQNR (dB): per sample and over all samples."""

    per_sample: list[float]
    overall: float


def totals(comparison: Comparison, stream: str) -> Totals:
    noise = comparison.noise[stream]
    return Totals([sqnr_db(s, e) for s, e in zip(comparison.signal, noise, strict=True)],
                  sqnr_db(sum(comparison.signal), sum(noise)))


@dataclass
class CheckedLayer:
    """One FP8 layer: how ComfyUI runs it and, where the pass reached it, its one-layer figures."""

    name: str
    runs_fp8: bool  # ComfyUI quantizes its input (False: weight-only, full precision)
    why: str
    scale: float  # the input scale ComfyUI uses: as stored, 1.0 where the file has none (NaN: it stops)
    stored_scale: float | None
    real_scale: bool
    stops: bool = False  # ComfyUI stops with an error on it (formats.comfy_runtime)
    reached: bool = False
    amax: float | None = None  # input amax on the full-precision stream
    clipped: float | None = None  # share of input values beyond 448 x scale
    static_sqnr_db: float | None = None  # the output's SQNR against full precision, with the file's scale
    dynamic_sqnr_db: float | None = None  # ... with dynamic per-tensor FP8

    @property
    def covered(self) -> float:
        """The largest input the scale takes unclipped (a negative scale clips at its magnitude)."""
        return E4M3_MAX * abs(self.scale)

    @property
    def gap_db(self) -> float:
        """How much worse than dynamic FP8 the file's scale makes this layer (0 where not measured
        or neither has a figure; inf where the file's output is NaN and dynamic FP8's is not)."""
        static, dynamic = self.static_sqnr_db, self.dynamic_sqnr_db
        if not self.runs_fp8 or static is None or dynamic is None or math.isnan(dynamic):
            return 0.0
        return math.inf if math.isnan(static) else _finite(dynamic) - _finite(static)

    @property
    def unusable_scale(self) -> bool:
        """It runs FP8 with a stored input_scale that is not positive and finite (0, negative,
        NaN, infinite), which ComfyUI and the check use as stored (docs/comfyui.md)."""
        stored = self.stored_scale
        return self.runs_fp8 and not self.stops and stored is not None and not usable_scale(stored)

    @property
    def clips(self) -> bool:
        return self.runs_fp8 and self.clipped is not None and self.clipped > CLIPPED_SHARE


def _finite(db: float) -> float:
    return 999.0 if math.isinf(db) else db


@dataclass
class CheckReport:
    input: str
    family: str | None
    status: str  # "ok", "below-min-sqnr", "not-run" (no forward pass for the family)
    verdict: str
    layers: list[CheckedLayer] = field(default_factory=list)
    reason: str | None = None  # why the model was not run
    times: list[float | None] = field(default_factory=list)  # each sample's sampling time (None: no time)
    comfy_db: list[float] = field(default_factory=list)  # end to end, per sample
    dynamic_db: list[float] = field(default_factory=list)
    comfy_overall_db: float | None = None
    dynamic_overall_db: float | None = None
    min_sqnr: float | None = None
    seconds: float = 0.0
    peak_live: int = 0

    @property
    def clipping(self) -> list[CheckedLayer]:
        return [layer for layer in self.layers if layer.clips]

    @property
    def stopping(self) -> list[CheckedLayer]:
        """The layers ComfyUI stops with an error on: the file does not run there."""
        return [layer for layer in self.layers if layer.stops]

    def worst(self) -> list[CheckedLayer]:
        """Reached layers that run FP8, the most harmed (static below dynamic) first."""
        reached = [layer for layer in self.layers if layer.reached and layer.runs_fp8]
        return sorted(reached, key=lambda layer: -layer.gap_db)

    def to_doc(self) -> dict:
        """Every figure, JSON-safe: check's --json, calibrate's --json "prediction"."""
        return {"input": self.input, "family": self.family, "status": self.status, "verdict": self.verdict,
               "reason": self.reason, "min_sqnr": self.min_sqnr, "seconds": round(self.seconds, 3),
               "peak_live": self.peak_live,
               "end_to_end": {"comfy": _stream(self.comfy_overall_db, self.comfy_db, self.times),
                              "dynamic": _stream(self.dynamic_overall_db, self.dynamic_db, self.times)},
               "counts": {"fp8_layers": len(self.layers), "runs_fp8": sum(layer.runs_fp8 for layer in self.layers),
                          "weight_only": sum(not layer.runs_fp8 for layer in self.layers),
                          "reached": sum(layer.reached for layer in self.layers),
                          "clipping": len(self.clipping), "comfyui_stops": len(self.stopping),
                          "placeholder_or_missing": sum(not layer.real_scale for layer in self.layers)},
               "thresholds": {"clipped_share": CLIPPED_SHARE, "unusable_db": UNUSABLE_DB, "behind_db": BEHIND_DB},
               "layers": [_layer_doc(layer) for layer in self.layers]}


def _db(x: float | None) -> float | None:
    """A figure for JSON: rounded, None for no noise at all (inf), no figure or none to give (nan)."""
    return None if x is None or not math.isfinite(x) else round(x, 3)


def _number(x: float | None) -> float | None:
    """A value for JSON as it is, None where it is not a finite number (a file's NaN or infinite
    input_scale, an amax of NaN weights): JSON has no NaN or Infinity."""
    return None if x is None or not math.isfinite(x) else x


def _stream(overall: float | None, per_sample: list[float], times: list[float | None]) -> dict:
    return {"sqnr_db": _db(overall), "exact": overall is not None and math.isinf(overall),
            "per_sample": [{"t": None if t is None else round(t, 4), "sqnr_db": _db(db)}
                           for t, db in zip(times, per_sample, strict=True)]}


def _layer_doc(layer: CheckedLayer) -> dict:
    return {"name": layer.name, "runs_fp8": layer.runs_fp8, "why": layer.why, "scale": _number(layer.scale),
            "stored_scale": _number(layer.stored_scale), "real_scale": layer.real_scale,
            "covered": _number(layer.covered), "comfyui_stops": layer.stops,
            "reached": layer.reached, "amax": _number(layer.amax), "clipped": _number(layer.clipped),
            "clips": layer.clips, "static_sqnr_db": _db(layer.static_sqnr_db),
            "dynamic_sqnr_db": _db(layer.dynamic_sqnr_db), "gap_db": _db(layer.gap_db)}


def checked_layers(runs: dict[str, LayerRun], figures: dict[str, LayerFigures]) -> list[CheckedLayer]:
    """Every FP8 layer of the file, in the file's layer order, with the figures the pass gave."""
    out = []
    for weight, run in runs.items():
        layer = CheckedLayer(run.layer, not run.weight_only, run.why, run.scale, run.stored, run.real_scale,
                             run.stops)
        f = figures.get(weight)
        if f is not None and f.values:
            layer.reached, layer.amax, layer.clipped = True, f.amax, f.clipped / f.values
            layer.static_sqnr_db = sqnr_db(f.signal, f.static_noise)
            layer.dynamic_sqnr_db = sqnr_db(f.signal, f.dynamic_noise)
        out.append(layer)
    return out


def build(input_name: str, runs: dict[str, LayerRun], comparison: Comparison, min_sqnr: float | None) -> CheckReport:
    """The report of a pass that ran, its verdict said."""
    comfy, dynamic = totals(comparison, "comfy"), totals(comparison, "dynamic")
    report = CheckReport(input_name, comparison.family, "ok", "", checked_layers(runs, comparison.layers),
                         times=comparison.times, comfy_db=comfy.per_sample, dynamic_db=dynamic.per_sample,
                         comfy_overall_db=comfy.overall, dynamic_overall_db=dynamic.overall, min_sqnr=min_sqnr,
                         seconds=comparison.seconds, peak_live=comparison.peak_live)
    report.verdict = verdict(report)
    if min_sqnr is not None and not comfy.overall >= min_sqnr:  # a NaN output fails too
        report.status = "below-min-sqnr"
    return report


def _fmt_db(db: float | None) -> str:
    return "exact" if db is None or math.isinf(db) else f"{db:.1f} dB"


def verdict(report: CheckReport) -> str:
    """One line a user understands; it says why a file ComfyUI cannot run is unusable, and when
    stored scales are not positive and finite (run as stored, as ComfyUI runs them)."""
    return _ran_verdict(report) + _unusable_clause(report.layers)


def _scale_kind(value: float) -> str:
    return "NaN" if math.isnan(value) else "infinite" if math.isinf(value) else "zero" if value == 0 else "negative"


def _unusable_clause(layers: list[CheckedLayer]) -> str:
    kinds = Counter(_scale_kind(layer.stored_scale) for layer in layers if layer.unusable_scale)
    if not kinds:
        return ""
    n = sum(kinds.values())
    whose = "1 layer's" if n == 1 else f"{n} layers'"
    listed = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    return f"; {whose} stored input_scale is not positive and finite ({listed}): run as stored, as ComfyUI runs it"


def _stops_text(stopping: list[CheckedLayer]) -> str:  # CheckReport.stopping: at least one layer
    return f"ComfyUI stops with an error on {plural(len(stopping), 'layer')} ({stopping[0].name}: {stopping[0].why})"


def _ran_verdict(report: CheckReport) -> str:
    comfy, dynamic = report.comfy_overall_db, report.dynamic_overall_db
    clipping = report.clipping
    clipping_text = f"{plural(len(clipping), 'layer')} clipping" if clipping else "no layer clipping"
    if report.stopping:
        return f"unusable in ComfyUI: {_stops_text(report.stopping)}; dynamic FP8 would give {_fmt_db(dynamic)}"
    if comfy is not None and math.isnan(comfy):
        if any(layer.unusable_scale for layer in report.layers):
            return (f"unusable in ComfyUI's fast FP8 path: the model's output is NaN as ComfyUI runs the file "
                    f"(dynamic FP8 would give {_fmt_db(dynamic)})")
        return "no figure: the model's output is NaN as ComfyUI runs the file (NaN values in its weights or scales?)"
    if comfy is None or math.isinf(comfy):
        return (f"every FP8 layer runs weight-only in ComfyUI (full precision): no FP8 error; "
                f"dynamic FP8 would give {_fmt_db(dynamic)} end to end")
    worst = report.worst()
    named = f"; worst layer {worst[0].name}" if worst and worst[0].gap_db > BEHIND_DB else ""
    if comfy < UNUSABLE_DB:
        return (f"unusable in ComfyUI's fast FP8 path: {clipping_text}, {_fmt_db(comfy)} end to end "
                f"(dynamic FP8 would give {_fmt_db(dynamic)}){named}")
    if dynamic is not None and _finite(dynamic) - comfy > BEHIND_DB:
        return (f"{_fmt_db(comfy)} end to end, {_finite(dynamic) - comfy:.1f} dB below dynamic FP8 "
                f"({_fmt_db(dynamic)}): {clipping_text}{named}")
    return f"{_fmt_db(comfy)} end to end; dynamic FP8 would give {_fmt_db(dynamic)}"


def file_only(input_name: str, family: str | None, reason: str, runs: dict[str, LayerRun]) -> CheckReport:
    """A family the forward pass cannot run: what the file alone shows (scales ComfyUI would use
    as 1.0, placeholders, weight-only layers)."""
    layers = checked_layers(runs, {})
    fp8 = [layer for layer in layers if layer.runs_fp8]
    unit = [layer for layer in fp8 if layer.scale == 1.0]
    placeholders = [layer for layer in fp8 if not layer.real_scale]
    stopping = [layer for layer in layers if layer.stops]
    said = (f"not run ({reason}); from the file alone: {len(fp8)} of {plural(len(layers), 'FP8 layer')} run FP8 "
            f"in ComfyUI, {len(unit)} of them with input scale 1.0, {len(placeholders)} with no real scale"
            f"{_unusable_clause(layers)}{f'; {_stops_text(stopping)}' if stopping else ''}")
    return CheckReport(input_name, family, "not-run", said, layers, reason=reason)


def _cell(x: float | None, spec: str) -> str:
    return "-" if x is None else ("exact" if math.isinf(x) else format(x, spec))


def render(report: CheckReport, verbose: bool = False) -> str:
    """The verdict, the end to end per sampling time, then the worst layers (every layer with `verbose`)."""
    lines = [f"{report.input}: {report.verdict}"]
    if report.times:
        per = ", ".join(f"{f'sample {i + 1}' if t is None else f't={t:.2f}'} {_cell(c, '.1f')}/{_cell(d, '.1f')}"
                        for i, (t, c, d) in enumerate(zip(report.times, report.comfy_db, report.dynamic_db,
                                                          strict=True)))
        lines.append(f"end to end, dB as ComfyUI runs the file / dynamic FP8: {per}")
    shown = report.layers if verbose else report.worst()[:WORST_SHOWN]
    if not shown:
        return "\n".join(lines)
    lines.append("every FP8 layer:" if verbose else f"worst layers ({len(shown)} of {len(report.worst())} "
                 "that run FP8; --verbose: all):")
    width = max(len(layer.name) for layer in shown)
    lines.append(f"  {'layer':<{width}}  {'runs':<11} {'amax':>9} {'448 x s':>9} {'clipped':>8} "
                 f"{'file dB':>8} {'dyn dB':>7}")
    for layer in shown:
        runs = "fp8" if layer.runs_fp8 else "weight-only"
        clipped = "-" if layer.clipped is None else f"{100 * layer.clipped:.2f}%"
        lines.append(f"  {layer.name:<{width}}  {runs:<11} {_cell(layer.amax, '9.3g')} {layer.covered:9.3g} "
                     f"{clipped:>8} {_cell(layer.static_sqnr_db, '8.1f')} {_cell(layer.dynamic_sqnr_db, '7.1f')}")
    return "\n".join(lines)
