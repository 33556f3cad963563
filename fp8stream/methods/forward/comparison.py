"""`fp8stream check`'s pass: the streaming forward pass (forward_pass.streaming) run as three
streams in lock step, each Linear's weight read once for all of them (one weight live at a time):

1. full precision: the weight dequantized, activations in float32 (the calibration's pass);
2. the file as ComfyUI runs it (docs/comfyui.md; `formats.comfy_runtime` reads each layer's
   setting): a layer on the FP8 matmul path computes
       x_q = clamp(x / input_scale, -448, 448).to(float8_e4m3fn)
       y   = (x_q * input_scale) @ W^T + bias       (W dequantized: what _scaled_mm computes)
   with input_scale = the stored one, 1.0 where the file has none (and a legacy scale_input of
   1.0, which ComfyUI drops, is 1.0 again); a placeholder is used as stored, and so is a value
   that is not positive and finite (ComfyUI checks none); a layer ComfyUI stops with an error on
   gets NaN (no output: scripts/comfy_truth.py checks each rule against ComfyUI). A layer flagged
   weight-only (full_precision_matrix_mult, a legacy 2-element scaled_fp8 marker) and every
   text-encoder layer run in full precision. The output is not rounded to the runtime's
   activation dtype: the figures are FP8's own cost;
3. dynamic per-tensor FP8 for reference: every FP8 layer (weight-only or not) with
   input_scale = that call's input amax / 448.

Each stream carries its own activations end to end (stream 2 is the model as ComfyUI would
compute it, errors compounding). Per checkpoint FP8 weight, on stream 1's input (so a layer's
figure is not confounded by upstream error): the input amax, the share of input values beyond
448 x input_scale, and the output's SQNR against full precision for the file's scale and for
dynamic FP8. End to end: each sample's model output against stream 1's (samples spread over the
sampling times, forward_pass.SamplePlan). The streams hold their own residual activations;
only one computes at a time (lockstep.py), and the per-layer figures are a few scalars.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import time
import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping, Protocol

import torch

from fp8stream.errors import FP8StreamError
from fp8stream.families import by_name
from fp8stream.formats.comfy_runtime import LayerRun
from fp8stream.methods.forward.engine import Diverged, StreamingModel
from fp8stream.methods.forward.forward_pass import PassSettings, Prepared, Streaming, in_step, streaming
from fp8stream.methods.forward.layer_figures import (
    LayerFigures,
    Segment,
    dynamic_scale,
    fp8_round_trip,
    record,
    segment_linear,
)
from fp8stream.methods.forward.row_source import RowSource
from fp8stream.names.suffixes import WEIGHT

STREAMS = ("full", "comfy", "dynamic")


@dataclass
class Comparison:
    """What the three streams gave."""

    family: str
    layers: dict[str, LayerFigures]  # checkpoint FP8 weight -> its figures (those the pass reached)
    times: list[float | None]  # each sample's sampling time (None: a text encoder's sample)
    signal: list[float]  # each sample's full-precision output, sum of squares
    noise: dict[str, list[float]]  # stream -> each sample's output error against full precision
    seconds: float = 0.0
    peak_live: int = 0
    weights_read: int = 0
    calls: int = 0  # model calls: streams x micro-batches


def segments_of(mapping: Mapping, linear: str, runs: Mapping[str, LayerRun]) -> list[Segment]:
    """The FP8 parts of a diffusers Linear's output rows, in order."""
    out, row = [], 0
    for r in mapping[linear + WEIGHT]:
        if r.source in runs:
            out.append(Segment(r.source, row, row + r.stop - r.start, runs[r.source]))
        row += r.stop - r.start
    return out


@dataclass(frozen=True)
class LinearPlan:
    """A diffusers Linear's FP8 parts, and the one input scale of stream 2 when a single one
    covers all its rows (its input is then quantized before the Linear runs: no second matmul)."""

    segments: list[Segment]
    comfy_whole: float | None  # stream 2: the scale of every row; None: mixed rows or weight-only parts
    dynamic_whole: bool  # stream 3: every row is FP8


def linear_plan(segments: list[Segment], rows: int) -> LinearPlan:
    covered = sum(s.stop - s.start for s in segments) == rows
    settings = {(s.run.weight_only, s.run.scale) for s in segments}
    one = covered and len(settings) == 1 and not segments[0].run.weight_only
    return LinearPlan(segments, segments[0].run.scale if one else None, covered)


class Scales(Protocol):
    """Each FP8 weight's stream-2 scale, asked once per call of a Linear, when every micro-batch
    of stream 1 has run it and before stream 2 does."""

    def of(self, weight: str, run: LayerRun) -> float: ...


class FileScales:
    """check: the scale the file holds (the run's)."""

    @staticmethod
    def of(weight: str, run: LayerRun) -> float:
        return run.scale


class Streams:
    """The hooks that make stream 2 ComfyUI's and stream 3 dynamic FP8, and record stream 1's
    one-layer figures: the pre-hook runs after the engine's (the weight is loaded), the
    post-hook before the engine's (the weight is still there). Lock step runs every micro-batch
    of stream 1 through a Linear before stream 2's: at the last one each FP8 part's scale is
    asked (`scales`, final then where it rests on stream 1's ranges) and stream 1's figures of
    every micro-batch are recorded with it (their inputs and outputs are alive still: each
    micro-batch waits inside its hook for its next turn)."""

    def __init__(self, sm: StreamingModel, micro_batches: int, scales: Scales | None = None) -> None:
        self.sm = sm  # its lockstep (in_step's) says which call, so which stream, runs
        self.micro_batches = micro_batches
        self.scales = scales or FileScales()  # None: the file's (check)
        self.figures: dict[str, LayerFigures] = {}
        self.repeated: set[str] = set()  # weights of a Linear called more than once in one forward
        self._calls: collections.Counter[int] = collections.Counter()  # by the Linear's plan
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # stream 1's (input, output) of this Linear
        self._asked: dict[int, LinearPlan] = {}  # a Linear's plan (by id) with the scales asked for its call

    def stream(self) -> str:
        return STREAMS[self.sm.lockstep.index() // self.micro_batches]

    def pre_hook(self, plan: LinearPlan):
        def pre(module: torch.nn.Module, args):
            stream, x, asked = self.stream(), args[0], self._asked.get(id(plan), plan)
            if stream == "comfy" and asked.comfy_whole is not None:
                return (fp8_round_trip(x, asked.comfy_whole), *args[1:])
            if stream == "dynamic" and asked.dynamic_whole:
                return (fp8_round_trip(x, dynamic_scale(x)), *args[1:])
            return None
        return pre

    def post_hook(self, plan: LinearPlan):
        def post(module: torch.nn.Module, args, output: torch.Tensor) -> None:
            stream, x, asked = self.stream(), args[0].detach(), self._asked.get(id(plan), plan)
            if stream == "full":
                self._full(module, x, output, plan)
            elif stream == "comfy" and asked.comfy_whole is None:  # row by row, in place
                for s in asked.segments:
                    if not s.run.weight_only:
                        output[..., s.start:s.stop] = segment_linear(module, fp8_round_trip(x, s.run.scale), s)
            elif stream == "dynamic" and not asked.dynamic_whole:
                q = fp8_round_trip(x, dynamic_scale(x))
                for s in asked.segments:
                    output[..., s.start:s.stop] = segment_linear(module, q, s)
        return post

    def _full(self, module: torch.nn.Module, x: torch.Tensor, output: torch.Tensor, plan: LinearPlan) -> None:
        """Stream 1's call: kept until its last micro-batch, then the scales asked and every
        micro-batch's figures recorded with them, in micro-batch order."""
        index = self.sm.lockstep.index()
        if index == 0:
            self._calls[id(plan)] += 1
            if self._calls[id(plan)] > 1:
                self.repeated.update(s.weight for s in plan.segments)
        self._pending.append((x, output))
        if index < self.micro_batches - 1:
            return
        segments = [dataclasses.replace(s, run=dataclasses.replace(s.run, scale=self.scales.of(s.weight, s.run)))
                    for s in plan.segments]
        asked = self._asked[id(plan)] = linear_plan(segments, module.out_features)
        pending, self._pending = self._pending, []
        for x_i, out_i in pending:
            record(self.figures, module, x_i, out_i, asked.segments)


def per_sample(output: torch.Tensor | list | tuple) -> torch.Tensor:
    """A model output as [samples, values]: a batch tensor, or a list of one tensor per sample
    (HiDream's unpatchify gives one)."""
    if isinstance(output, torch.Tensor):
        return output.detach().reshape(output.shape[0], -1)
    return torch.stack([t.detach().reshape(-1) for t in output])


def _call(model: torch.nn.Module, kwargs: dict, into: list, slot: int) -> None:
    with torch.no_grad():  # per thread: each call sets it in the thread that runs it
        into[slot] = per_sample(model(**kwargs, return_dict=False)[0])


@contextlib.contextmanager
def _hooked(model: torch.nn.Module, mapping: Mapping, runs: Mapping[str, LayerRun],
            streams: Streams) -> Iterator[None]:
    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                segments = segments_of(mapping, name, runs)
                if segments:
                    plan = linear_plan(segments, module.out_features)
                    handles.append(module.register_forward_pre_hook(streams.pre_hook(plan)))
                    handles.append(module.register_forward_hook(streams.post_hook(plan), prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()


def in_streams(s: Streaming, prepared: Prepared, runs: Mapping[str, LayerRun],
               scales: Scales) -> tuple[Comparison, Streams]:
    """The three streams over a pass `streaming` set up (inside its block); the ranges and
    traces of the pass are stream 1's alone. Diverged: they took different paths."""
    n = len(s.inputs)
    s.sm.measured_calls = n
    streams = Streams(s.sm, n, scales)
    outputs: list = [None] * (len(STREAMS) * n)
    calls = [functools.partial(_call, s.model, kwargs, outputs, k * n + i)
             for k in range(len(STREAMS)) for i, kwargs in enumerate(s.inputs)]
    with _hooked(s.model, prepared.mapping, runs, streams), warnings.catch_warnings():
        # diffusers' deprecation notes are not the user's business (global: the calls' threads too)
        warnings.simplefilter("ignore", FutureWarning)
        in_step(s.sm, calls)  # more than one call: always in lock step
    # a text encoder's samples differ in their text, not in a sampling time
    dit = by_name(prepared.detection.family).kind == "dit"
    times = [float(t) if dit else None for t in s.plan.timesteps()]
    signal, noise = _end_to_end(outputs, n)
    return Comparison(prepared.detection.family, streams.figures, times, signal, noise, calls=len(calls)), streams


def compare(source: RowSource, prepared: Prepared, runs: Mapping[str, LayerRun],
            settings: PassSettings) -> Comparison:
    """check: the three streams over the prepared model (its `reason` must be None), the file's scales."""
    start = time.monotonic()
    with streaming(source, prepared, settings) as s:
        try:
            comparison, _ = in_streams(s, prepared, runs, FileScales())
        except Diverged as e:
            raise FP8StreamError(f"{prepared.detection.family}: the three streams took different paths through "
                                 f"the model ({e}): its control flow depends on values (an MoE's routing), "
                                 "which check cannot run in lock step") from None
    return dataclasses.replace(comparison, seconds=time.monotonic() - start, peak_live=s.state.peak_live,
                               weights_read=s.state.weights_read)


def _end_to_end(outputs: list, micro_batches: int) -> tuple[list[float], dict[str, list[float]]]:
    """Each sample's full-precision output energy and each stream's error energy against it."""
    def samples(k: int) -> torch.Tensor:
        return torch.cat(outputs[k * micro_batches:(k + 1) * micro_batches], 0).double()

    full = samples(0)
    signal = full.square().sum(1).tolist()
    noise = {name: (samples(k) - full).square().sum(1).tolist() for k, name in enumerate(STREAMS) if k}
    return signal, noise

