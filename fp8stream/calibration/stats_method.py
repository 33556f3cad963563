"""`--method stats`: scales from a stats file (real data; format and matching: stats.py)."""

from __future__ import annotations

from typing import Mapping

from fp8stream.calibration.fp8 import E4M3_MAX
from fp8stream.calibration.interface import MethodPlan, ModelView, ScaleEstimate
from fp8stream.calibration.rules import amax_from_histogram
from fp8stream.calibration.settings import CalibrationSettings
from fp8stream.calibration.simulate import WeightAwareMethod
from fp8stream.calibration.stats import LayerStats, Matching, load_map, load_stats, match
from fp8stream.errors import UsageError
from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import TensorInfo

EXTREME_AMAX = 1e4


class StatsMethod:
    """Scales from recorded statistics, matched to layers by name; layers without stats are an
    error, or simulated with `--fallback simulate` (which then watches the stream)."""

    def __init__(self, settings: CalibrationSettings) -> None:
        self.settings = settings
        self.stats = load_stats(settings.stats)
        self.user_map = load_map(settings.map) if settings.map else None
        self.fallback = WeightAwareMethod(settings) if settings.fallback == "simulate" else None
        self.matching: Matching | None = None

    def prepare(self, model: ModelView) -> MethodPlan:
        names = [layer.name for layer in model.layers]
        self.matching = m = match(self.stats, names, self.user_map)
        missing = [n for n in names if n not in m.by_layer]
        notes = [f"stats name {name!r} is ambiguous ({', '.join(cands)}): not used" for name, cands in m.ambiguous.items()]
        if m.unused:
            notes.append(f"{len(m.unused)} stats entries match no FP8 layer: {', '.join(m.unused[:8])}"
                         + (" ..." if len(m.unused) > 8 else ""))
        if missing and self.fallback is None:
            raise UsageError(f"{len(missing)} FP8 layers have no stats (e.g. {', '.join(missing[:4])}); "
                             "give --map pairs or --fallback simulate")
        if missing:
            notes.append(f"{len(missing)} layers without stats fall back to simulate")
        if self.fallback is None:
            return MethodPlan(rows=False, notes=tuple(notes))
        inner = self.fallback.prepare(model)
        return MethodPlan(watches=inner.watches, notes=tuple(notes))

    def observe_tensor(self, info: TensorInfo, chunk) -> None:
        if self.fallback is not None:
            self.fallback.observe_tensor(info, chunk)

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        if self.fallback is not None:
            self.fallback.observe_weight(layer, rows, row_start)

    def weight_done(self, layer: FP8Layer) -> None:
        pass

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        out = {name: self._from_stats(name, s) for name in weight_scales
               if (s := self.matching.by_layer.get(name)) is not None}
        rest = {name: ws for name, ws in weight_scales.items() if name not in out}
        if rest:
            for name, e in self.fallback.scales(model, rest).items():
                out[name] = ScaleEstimate(e.scale, "no stats: simulate: " + e.source,
                                          e.warnings + ("no real-data stats (fallback)",), e.amax, e.bound, e.margin)
        return out

    def _from_stats(self, name: str, s: LayerStats) -> ScaleEstimate:
        how = self.matching.how[name]
        src = ", ".join(s.sources[:4]) + (" ..." if len(s.sources) > 4 else "")
        if s.amax is None:
            return ScaleEstimate(s.scale if s.scale else 1.0, f"plain input_scale from stats ({how}: {src})",
                                 () if s.scale else ("stats scale 0: using 1.0",))
        warnings = []
        rule = self.settings.rule
        if rule != "max" and s.hist is None:
            warnings.append(f"no histogram for rule {rule}: used the max")
            rule = "max"
        amax = s.amax if rule == "max" else amax_from_histogram(rule, s.amax, s.hist, self.stats.lo_log2,
                                                                  self.stats.bins_per_octave, self.settings.percentile)
        if amax <= 0:
            warnings.append("recorded amax 0 (layer never saw a non-zero input): scale 1.0")
            return ScaleEstimate(1.0, f"real data ({how}: {src})", tuple(warnings))
        if amax >= EXTREME_AMAX:
            warnings.append(f"extreme recorded range (amax {amax:.3g}): candidate to keep weight-only")
        return ScaleEstimate(amax / E4M3_MAX, f"real data {rule} over {s.calls} calls ({how}: {src})",
                             tuple(warnings), amax=amax)


def create(settings: CalibrationSettings) -> StatsMethod:
    return StatsMethod(settings)
