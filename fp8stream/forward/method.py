"""`--method forward`: each FP8 linear's input range from a streaming synthetic forward pass
through the checkpoint's own weights (fp8stream.forward.run), times a safety margin, capped by
the hard bound of `--method simulate --sim-mode bound` where that bound is a proof.

    scale = min(margin x forward amax, hard bound) / 448

The margin (default 3: CalibrationSettings.forward_margin, `--forward-margin`), measured on the
harness's trained tiny Flux, SD3 and Wan and the Flux rescalings split256 / outlier50 (16
samples x 20 Euler steps, real activations): real input amax / forward amax is 0.37-1.77 over
every layer (attention outputs use the mix bound of engine.py; without it they reached 4.8).
Margin 2 clips none of them, with 13% headroom; 3 leaves 70% for models we have not seen, and
a scale too large by 3 only moves the smallest values 1.6 binades towards FP8's subnormals,
where one too small clips (docs/ on the scale rules). The bound is a proof only when it
assumes nothing about model inputs (its notes carry no "ASSUMED"); otherwise it is shown but
does not cap.

Layers the pass does not reach (family unknown, converter mismatch, diffusers missing, a layer
outside the model code) get the hard bound of the simulate method, with the reason, and a
warning when that bound rests on an assumption. The forward pass runs once, at the first
estimate (tail time: the copy pass has just read the file, so its pages are likely cached), by
positioned reads of the input file; a pipe or zstd input is refused (it cannot be re-read).

Plugs into today's duck-typed method API (begin / wants / observe_tensor / observe_weight /
weight_done / estimate), like fp8stream.calibration.simulate.WeightAwareMethod.
"""

from __future__ import annotations

import dataclasses
import math
import os

from fp8stream.calibration.fp8 import E4M3_MAX
from fp8stream.formats.layers import FP8Layer


class ForwardMethod:
    name = "forward"

    def __init__(self, settings) -> None:
        from fp8stream.calibration.simulate import WeightAwareMethod

        self.settings = settings
        self.margin = float(settings.forward_margin)
        self.bound = WeightAwareMethod(dataclasses.replace(settings, sim_mode="bound", rule="max"))
        self.result = None
        self.notes: list[str] = []  # read by the rewrite before the pass runs: per-layer warnings say why
        self._header = None
        self._paths: dict[str, str] | None = None

    # ---- the stream (the bound's row norms and held embedders learn from it) ---------------
    def begin(self, layers: list[FP8Layer], header, whole=None, tensor_path: dict[str, str] | None = None) -> None:
        from fp8stream.errors import UsageError
        from fp8stream.forward.run import import_diffusers

        if not tensor_path:
            raise UsageError("--method forward reads layers in execution order by positioned reads: "
                             "it needs an uncompressed file, not a pipe or zstd stream (save it to a file first)")
        import_diffusers()  # one line saying how to install it, before any output exists
        self.bound.begin(layers, header, whole=whole, tensor_path=tensor_path)
        self._header = whole or header
        self._paths = dict(tensor_path)

    def wants(self, info) -> bool:
        return self.bound.wants(info)

    def observe_tensor(self, info, chunk: bytes) -> None:
        self.bound.observe_tensor(info, chunk)

    def observe_weight(self, layer: FP8Layer, rows, row_start: int) -> None:
        self.bound.observe_weight(layer, rows, row_start)

    def weight_done(self, layer: FP8Layer) -> None:
        self.bound.weight_done(layer)

    # ---- the answer -------------------------------------------------------------------------
    def _forward(self):
        if self.result is None:
            from fp8stream.forward.run import run

            key = _model_key(self._paths, forward_settings(self.settings))
            if _LAST[0] != key:  # each shard of a sharded model asks: one pass serves them all
                rows = self._rows()
                try:
                    _LAST[:] = [key, run(rows, self._header, forward_settings(self.settings))]
                finally:
                    rows.close()
            self.result = _LAST[1]
        return self.result

    def _rows(self):
        from fp8stream.forward.source import FileRows
        from fp8stream.io.reader import LazyFile

        headers = {}
        for path in sorted(set(self._paths.values())):
            with LazyFile(path) as f:
                headers[path] = f.header
        return FileRows(headers, self._paths)

    def estimate(self, layer: FP8Layer, weight_scale: float):
        from fp8stream.calibration.methods import ScaleEstimate

        result = self._forward()
        b = self.bound.estimate(layer, weight_scale)
        bound = b.scale * E4M3_MAX
        proven = not any("ASSUMED" in w for w in b.warnings)
        seen = result.amax.get(layer.weight.name) if result.reached(layer.weight.name) else None
        if seen is None or seen <= 0.0:
            why = result.reason or ("the forward pass did not reach this layer" if seen is None
                                    else "its input was all zero in the forward pass")
            warnings = [f"not reached by the forward pass ({why}): hard bound"] + b.warnings
            return ScaleEstimate(b.scale, f"hard bound (simulate); {b.assumption}", warnings)
        amax = self.margin * seen
        how = f"forward amax {seen:.4g} x margin {self.margin:g}"
        if proven and bound < amax:
            amax, how = bound, how + f", capped by the hard bound {bound:.4g}"
        else:
            how += f"; bound {bound:.4g}" + ("" if proven else " (rests on an assumption: not a cap)")
        if not (amax > 0 and math.isfinite(amax)):
            return ScaleEstimate(1.0, how, ["no usable range: scale 1.0"])
        return ScaleEstimate(amax / E4M3_MAX, f"{result.family} {how}", [])


# The last forward pass of this process and its key (files, their sizes and times, settings).
_LAST: list = [None, None]


def _model_key(paths: dict[str, str], settings) -> tuple:
    files = []
    for path in sorted(set(paths.values())):
        st = os.stat(path)
        files.append((os.path.realpath(path), st.st_size, st.st_mtime_ns))
    return tuple(files), settings


def forward_settings(settings):
    """The forward pass's own settings from the calibration settings."""
    from fp8stream.forward.run import ForwardSettings

    return ForwardSettings(batch=settings.forward_batch, image_tokens=settings.forward_tokens,
                           text_tokens=settings.forward_text_tokens, seed=settings.seed,
                           threads=settings.forward_threads, device=settings.device)
