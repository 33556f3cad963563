"""calibrate's prediction: the pass it runs anyway also runs `check`'s streams (comparison.py),
so the report says what `fp8stream check OUT` would say of the file it writes.

Stream 2 runs each FP8 layer as the output will be run by ComfyUI. The rewrite says how before
the data moves (`Request.ask`): from the plan (layers kept or made weight-only, excluded ones,
scales kept from the file), leaving the scale of each layer the method scales to the pass. That
scale rests on stream 1's amax over every micro-batch, so it is asked when stream 1 has run the
Linear on all of them, before stream 2 runs it (lock step orders it so), and derived by the
method's own function (ForwardMethod.scale_now: its margin rule, as_f32 as written). What the
pass cannot know then is checked after the scales are written (pipeline/prediction.py): every
scale the streams ran a layer with must be the one written (a hard bound's cap, a shared-scale
group's max, a Linear called again with a larger input change it), else no figure is given.

The streams only observe: the pass's ranges are stream 1's alone (engine.measured_calls), the
same as without them, so the scales, and the bytes, are the same.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from fp8stream.formats.comfy_runtime import LayerRun
from fp8stream.methods.forward.comparison import Comparison, in_streams
from fp8stream.methods.forward.engine import Diverged, StreamingModel
from fp8stream.methods.forward.forward_pass import Prepared, Streaming

ASKED_TOO_LATE = "the rewrite did not ask for it before the pass ran"
NOT_RUN = "the forward pass did not run"


@dataclass
class PassPrediction:
    """What the streams gave, and what the rewrite checks the written scales against."""

    comparison: Comparison | None  # None: the streams did not run (`reason`)
    runs: Mapping[str, LayerRun] = field(default_factory=dict)  # stream 2's run of each FP8 weight, as asked
    used: dict[str, list[float | None]] = field(default_factory=dict)  # weight -> each scale it ran with
    repeated: frozenset[str] = frozenset()  # weights of a Linear called more than once in one forward
    reason: str | None = None


class Request:
    """MethodPlan.prediction (methods/interface.py), and the pass's MoreStreams: asked once by
    the rewrite before the data moves, read after the method's scales. A pass started before
    the ask (beside the copy, on a GPU) waits for it."""

    def __init__(self, scale_now: Callable[[str, float | None], float | None]) -> None:
        self.scale_now = scale_now  # a layer's scale from its amax so far, as the method gives it
        self.runs: Mapping[str, LayerRun] | None = None
        self.from_pass: frozenset[str] = frozenset()
        self.outcome = PassPrediction(None, reason=ASKED_TOO_LATE)
        self._asked = threading.Event()

    def ask(self, runs: Mapping[str, LayerRun] | None, from_pass: frozenset[str] = frozenset()) -> None:
        """How ComfyUI will run each FP8 weight of the output, by name (None: no prediction after
        all); `from_pass`: the weights whose scale the pass gives (their runs' scales unused)."""
        self.runs, self.from_pass = runs, from_pass
        self.outcome = PassPrediction(None, reason="the rewrite asked for none" if runs is None else NOT_RUN)
        self._asked.set()

    def result(self) -> PassPrediction:
        return self.outcome

    def wanted(self, stop: threading.Event | None) -> bool:
        while not self._asked.wait(0.05):  # until asked, or the run is over (the pass then stops at once)
            if stop is not None and stop.is_set():
                return False
        return self.runs is not None

    def run(self, s: Streaming, prepared: Prepared) -> None:
        scales = PassScales(s.sm, prepared.family.value_sources(prepared.config), self)
        started = time.monotonic()
        comparison, streams = in_streams(s, prepared, self.runs, scales)
        comparison = dataclasses.replace(comparison, seconds=time.monotonic() - started,
                                         peak_live=s.state.peak_live, weights_read=s.state.weights_read)
        self.outcome = PassPrediction(comparison, self.runs, scales.used, frozenset(streams.repeated))

    def diverged(self, error: Diverged) -> None:
        self.outcome = PassPrediction(None, reason=f"the streams took different paths through the model ({error})")


class PassScales:
    """comparison.Scales for calibrate: a scale the pass gives is asked of the method from the
    weight's amax as the pass has seen it so far; every scale used is kept."""

    def __init__(self, sm: StreamingModel, value_sources: Mapping[str, list[list[str]]], request: Request) -> None:
        self.sm, self.value_sources, self.request = sm, value_sources, request
        self.used: dict[str, list[float | None]] = {}

    def of(self, weight: str, run: LayerRun) -> float:
        if weight not in self.request.from_pass:
            self.used.setdefault(weight, []).append(run.scale)
            return run.scale
        amax = self.sm.amax_now(weight, self.value_sources)
        scale = self.request.scale_now(weight, amax)
        if amax != 0.0 and amax == amax:  # an input all zero or NaN gives the same figures for any scale
            self.used.setdefault(weight, []).append(scale)  # None: the bound's, known after the pass
        return 1.0 if scale is None else scale
