"""`--method stats`: scales from a stats file (real data; format and matching: stats_file.py).

The default rule (`--rule max`) takes the recorded max x `--stats-margin` (default 2), capped
by the hard bound of `--method simulate` where that bound is a proof (scales/margin.py):
a max recorded on some prompts is not the max of the next ones. Measured on the quality
harness, with stats recorded on other seeds and class prompts than the judged run: the plain
max clips 0.1-0.8% of the real inputs of one to three layers per DiT (up to 13.7 dB below
dynamic on one layer); x 2 clips at most 0.012% of one layer's, and every DiT stays within 1 dB
of dynamic end to end (README, Quality). `--rule percentile|mse` apply no margin unless one is given: they trade
clipping for resolution on purpose. The bound streams with the copy pass (weight rows and the
producers it watches), so the method still reads the input once, pipes included.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from fp8stream.errors import UsageError
from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import TensorInfo
from fp8stream.methods.interface import MethodPlan, ModelView
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.methods.simulate.simulate_method import WeightAwareMethod
from fp8stream.methods.stats.stats_file import LayerStats, Matching, load_map, load_stats, match
from fp8stream.scales.estimate import GIVEN, MEASURED, ScaleEstimate
from fp8stream.scales.fp8_maths import E4M3_MAX
from fp8stream.scales.layer_warning import LayerWarning, WarningKind
from fp8stream.scales.margin import with_margin
from fp8stream.scales.rules import amax_from_histogram

EXTREME_AMAX = 1e4
_NO_STATS = LayerWarning(WarningKind.NO_STATS, "no real-data stats (fallback)")


class StatsMethod:
    """Scales from recorded statistics, matched to layers by name; layers without stats are an
    error, or simulated with `--fallback simulate` (which then watches the stream)."""

    def __init__(self, settings: CalibrationSettings) -> None:
        self.settings = settings
        self.stats = load_stats(settings.stats)
        self.user_map = load_map(settings.map) if settings.map else None
        self.margin = settings.effective_stats_margin
        bound = dataclasses.replace(settings, sim_mode="bound", rule="max")
        # one streaming bound model serves the cap and the fallback when they are the same
        self.bound = WeightAwareMethod(bound) if self.margin > 1.0 else None
        self.fallback = None
        if settings.fallback == "simulate":
            same = self.bound is not None and bound == settings
            self.fallback = self.bound if same else WeightAwareMethod(settings)
        # the bound models that watch the stream (one when the cap's and the fallback's are the same)
        self._streaming = [m for m in dict.fromkeys((self.bound, self.fallback)) if m is not None]
        self.matching: Matching | None = None
        self._bounds: dict[str, ScaleEstimate] = {}

    def needs_random_access(self, model: ModelView) -> bool:
        return False  # it reads the stream as it passes

    def prepare(self, model: ModelView) -> MethodPlan:
        names = [layer.name for layer in model.layers]
        self.matching = m = match(self.stats, names, self.user_map)
        missing = [n for n in names if n not in m.by_layer]
        notes = [f"stats name {name!r} is ambiguous ({', '.join(cands)}): not used"
                 for name, cands in m.ambiguous.items()]
        if m.unused:
            notes.append(f"{len(m.unused)} stats entries match no FP8 layer: {', '.join(m.unused[:8])}"
                         + (" ..." if len(m.unused) > 8 else ""))
        if missing and self.fallback is None:
            raise UsageError(f"{len(missing)} FP8 layers have no stats (e.g. {', '.join(missing[:4])}); "
                             "give --map pairs or --fallback simulate")
        if missing:
            notes.append(f"{len(missing)} layers without stats fall back to simulate")
        inner = [m.prepare(model) for m in self._streaming]
        if not inner:
            return MethodPlan(rows=False, notes=tuple(notes))
        return MethodPlan(watches=frozenset().union(*(p.watches for p in inner)), notes=tuple(notes))

    def observe_tensor(self, info: TensorInfo, chunk) -> None:
        for m in self._streaming:
            m.observe_tensor(info, chunk)

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        for m in self._streaming:
            m.observe_weight(layer, rows, row_start)

    def close(self) -> None:
        """Close the methods it streams through (the bound's thread, if one runs)."""
        for m in self._streaming:
            m.close()

    def weight_done(self, layer: FP8Layer) -> None:
        pass

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        if self.bound is not None:
            with_stats = {n: ws for n, ws in weight_scales.items() if n in self.matching.by_layer}
            self._bounds = self.bound.scales(model, with_stats)
        out = {name: self._from_stats(name, s) for name in weight_scales
               if (s := self.matching.by_layer.get(name)) is not None}
        rest = {name: ws for name, ws in weight_scales.items() if name not in out}
        if rest:
            for name, e in self.fallback.scales(model, rest).items():
                out[name] = ScaleEstimate(e.scale, "no stats: simulate: " + e.source,
                                          e.warnings + (_NO_STATS,), e.amax, e.bound, e.margin,
                                          e.assumed, e.basis)
        return out

    def _from_stats(self, name: str, s: LayerStats) -> ScaleEstimate:
        how = self.matching.how[name]
        src = ", ".join(s.sources[:4]) + (" ..." if len(s.sources) > 4 else "")
        if s.amax is None:
            warned = () if s.scale else (LayerWarning(WarningKind.OTHER, "stats scale 0: using 1.0"),)
            return ScaleEstimate(s.scale if s.scale else 1.0, f"plain input_scale from stats ({how}: {src})", warned,
                                 basis=GIVEN)
        warnings = []
        rule = self.settings.rule
        if rule != "max" and s.hist is None:
            warnings.append(LayerWarning(WarningKind.NO_HISTOGRAM, f"no histogram for rule {rule}: used the max"))
            rule = "max"
        amax = s.amax if rule == "max" else amax_from_histogram(rule, s.amax, s.hist, self.stats.lo_log2,
                                                                  self.stats.bins_per_octave, self.settings.percentile)
        if amax <= 0:
            warnings.append(LayerWarning(WarningKind.NEVER_REACHED,
                                         "recorded amax 0 (layer never saw a non-zero input): scale 1.0"))
            return ScaleEstimate(1.0, f"real data ({how}: {src})", tuple(warnings), basis=MEASURED)
        if amax >= EXTREME_AMAX:
            warnings.append(LayerWarning(WarningKind.EXTREME_RANGE,
                                         f"extreme recorded range (amax {amax:.3g}): candidate to keep weight-only"))
        label = f"real data {rule} over {s.calls} calls ({how}: {src}): amax"
        if self.margin == 1.0:
            return ScaleEstimate(amax / E4M3_MAX, label + f" {amax:.4g}", tuple(warnings), amax=amax, margin=1.0,
                                 basis=MEASURED)
        return with_margin(amax, self.margin, self._bounds.get(name), label, tuple(warnings), basis=MEASURED)


def create(settings: CalibrationSettings) -> StatsMethod:
    return StatsMethod(settings)
