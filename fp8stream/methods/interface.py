"""What a calibration method is: the one interface the rewrite pass calls (docs: ARCHITECTURE.md).

A run makes the chosen method with `create(settings)` (its module, named in registry.py, is
imported then), and calls, in this order:

0. For a pipe or a compressed stream only (`model.source` None): `needs_random_access(model)`,
   from the header, whether the method will read tensors by name. Then the stream is spooled
   to a temporary file first (pipeline/spool.py) and `prepare` gets its `source`; with
   --no-spool the run refuses. What the method works out to answer (the forward pass's model
   and mapping) it keeps for `prepare`: a method is prepared once.
1. `prepare(model)` before the output header is written, with the header (the whole model's,
   merged over shards) and, for a file, a sharded folder or a spooled stream, `model.source`
   to read any tensor (the forward pass starts here on a GPU when the copy streams, to run beside it).
   The returned `MethodPlan` says which layers the method will give a scale and which must be
   kept weight-only (that changes marker sizes, so it is fixed here) and which other tensors
   it wants to see stream past.
1b. Where the copy takes its bytes from the method's reads (`model.copy_takes_reads`: IN and OUT
   local files, pipeline/placed_run.py), before the copy: `MethodPlan.read_weights()`, when the
   plan has one: the method's reads by name (the forward pass, on any device); each row range
   read through `model.source` is handed to the copy (its `tap`), which places it and shows an
   FP8 weight's rows to `observe_weight` as they come.
2. While the data streams, front to back, once: `observe_weight(layer, rows, row_start)` with
   each chunk of whole rows of a calibrated layer's FP8 weight (when `MethodPlan.rows`; in row
   order, but for those taken in 1b), then
   `weight_done(layer)`; `observe_tensor(info, chunk)` with every chunk of each tensor named in
   `MethodPlan.watches`.
3. `scales(model, weight_scales)` after the stream: every asked layer's own scale, with where it
   came from. Shared-scale groups, existing scales and legacy rules are applied by the caller.
4. `close()` once the run is over, whether it succeeded or not.

Nothing here imports torch: `rows` (raw FP8 bytes, [rows, in_features]) is a numpy uint8 array
on `--device cpu` and a uint8 torch tensor on the device otherwise.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from fp8stream.formats.comfy_runtime import LayerRun
from fp8stream.formats.layers import FP8Layer
from fp8stream.io.header import Header, TensorInfo
from fp8stream.methods.registry import METHODS
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.scales.estimate import ScaleEstimate

if TYPE_CHECKING:
    from fp8stream.io.source import TensorSource


@dataclass(frozen=True)
class ModelView:
    """The model as a method may see it. `header`: every tensor of the model (all shards);
    `layers`: the layers to calibrate; `source`: by-name positioned reads of any tensor, None
    when the input is a pipe or a compressed stream (readable once, in order) that is not
    spooled: a method asking for random access gets it spooled first, unless --no-spool."""

    header: Header
    layers: list[FP8Layer]
    source: "TensorSource | None" = None
    # a dry run: prepare() decides from the header alone, reads no weight and starts nothing
    dry_run: bool = False
    # show the method's own progress bars (the forward pass's) on stderr: the run's --progress
    progress: bool = False
    # IN and OUT are local files written at fixed places (no zstd, no --verify; on any device): every
    # row range the method reads through `source` is the copy's, so `read_weights` reads each byte
    # for both, once (pipeline/placed_run.py); False: the copy streams IN front to back by itself
    copy_takes_reads: bool = False


@dataclass(frozen=True)
class MethodPlan:
    """What a method will do, decided from the header before any data moves."""

    # layer name -> why the method gives it no scale: the layer is written weight-only
    weight_only: Mapping[str, str] = field(default_factory=dict)
    # layer name -> why the method keeps it weight-only though it gives it a scale (measured): the
    # flag is written with that scale beside it, for runtimes that read the scale and not the flag;
    # a format with no per-layer flag (legacy scaled_fp8) runs the layer with that scale
    scaled_weight_only: Mapping[str, str] = field(default_factory=dict)
    # layer name -> why a dry run cannot decide its weight-only choice (only the real pass can)
    undecided: Mapping[str, str] = field(default_factory=dict)
    # tensors (not the calibrated layers' FP8 weights) to pass to observe_tensor as they stream
    watches: frozenset[str] = frozenset()
    rows: bool = True  # observe_weight / weight_done get the calibrated layers' weight rows
    # the reads by name `scales` would make (the forward pass), made when called: given where
    # `ModelView.copy_takes_reads`, and called before the copy, which takes its bytes from them (1b)
    read_weights: Callable[[], None] | None = None
    notes: tuple[str, ...] = ()  # file-level notes for the report
    # calibrate's prediction from the method's forward pass (--predict): the rewrite asks it how the
    # output will run before the data moves, and reads its result after `scales`; None: there is none,
    # `no_prediction` says why (empty: the method runs no forward pass)
    prediction: Predictor | None = None
    no_prediction: str = ""


class Predictor(Protocol):
    """The streams a method's forward pass runs beside its own to predict the output as ComfyUI
    will run it (methods/forward/prediction.py). `ask`, once, before the data moves: each FP8
    weight's run (formats/comfy_runtime.LayerRun) by weight name, None for no prediction after
    all; `from_pass`: the weights whose scale the pass itself gives (the method's, asked of it
    as the pass runs them). `result`, after `scales`: what the streams gave (a PassPrediction)."""

    def ask(self, runs: Mapping[str, LayerRun] | None, from_pass: frozenset[str] = frozenset()) -> None: ...

    def result(self) -> Any: ...


class CalibrationMethod(Protocol):
    """A calibration method; made by `create(settings)` from its module's `create`."""

    def needs_random_access(self, model: ModelView) -> bool:
        """Asked of a stream before `prepare`: whether the method will read tensors by name
        (`model.source`), decided from the header (and the settings: --no-spool)."""
        ...

    def prepare(self, model: ModelView) -> MethodPlan: ...

    def observe_weight(self, layer: FP8Layer, rows: Any, row_start: int) -> None: ...

    def weight_done(self, layer: FP8Layer) -> None: ...

    def observe_tensor(self, info: TensorInfo, chunk: bytes | bytearray | memoryview) -> None: ...

    def scales(self, model: ModelView, weight_scales: Mapping[str, float]) -> dict[str, ScaleEstimate]:
        """A ScaleEstimate for every layer named in `weight_scales` (its weight scale as read)."""
        ...

    def close(self) -> None:
        """Stop and release what `prepare` started (the forward pass's thread); called once the
        run is over, also when it failed part way."""
        ...


def create(settings: CalibrationSettings) -> CalibrationMethod:
    """The chosen method (registry.METHODS), its module imported now."""
    module = importlib.import_module(METHODS[settings.method].module)
    return module.create(settings)
