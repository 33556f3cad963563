"""`prepare(header)` then `run(source, prepared, settings)`: the streaming synthetic forward pass.

Usable without the rewrite pass: `prepare` needs only the header (merged over shards); `run`
reads rows through anything with `info(name)` and `read_rows(name, start, stop)`
(`fp8stream.io.source.TensorSource` reads files and shards). The result says, per checkpoint
weight, the amax of its input over all samples, and which weights were reached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Mapping, Protocol

import torch

from fp8stream.families import model_names
from fp8stream.families.detect import Detection
from fp8stream.families.family import ModelCode
from fp8stream.families.samples import SamplePlan
from fp8stream.io.header import Header
from fp8stream.methods.forward import derived_cache
from fp8stream.methods.forward.diffusers_import import import_diffusers
from fp8stream.methods.forward.mapping import MappingError, check_mapping, derive_mapping
from fp8stream.methods.forward.model_tensors import forward_family, model_tensors, weight_scales
from fp8stream.methods.forward.pass_bar import counting, fp8_sources
from fp8stream.methods.forward.row_source import Reader, RowSource
from fp8stream.methods.forward_settings import micro_batch_for
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.names.suffixes import WEIGHT
from fp8stream.progress import bar as progress_bar

if TYPE_CHECKING:
    from fp8stream.methods.forward.engine import Diverged, Pass, StreamingModel


@dataclass(frozen=True)
class PassSettings:
    batch: int = 4  # samples: timesteps, text scales and guidance values spread over them
    image_tokens: int = 256  # latent tokens per sample (after patching)
    text_tokens: int = 128  # text tokens per sample
    seed: int = 0
    threads: int = 2  # torch threads for the pass, whatever the process's other settings
    micro_batch: int | None = None  # samples run at once; None: micro_batch_for(...)
    device: str = "cpu"
    progress: bool = False  # a bar over the model's Linears on stderr
    bar_line: int = 0  # its line among the run's bars (1: below the copy's, when beside it)
    more_streams: MoreStreams | None = None  # run with the pass's own (calibrate's prediction)

    @classmethod
    def of(cls, settings: CalibrationSettings, progress: bool = False) -> PassSettings:
        """The pass's own settings from the calibration settings; `progress`: show its bar."""
        return cls(batch=settings.forward_batch, image_tokens=settings.forward_tokens,
                   text_tokens=settings.forward_text_tokens, seed=settings.seed, threads=settings.forward_threads,
                   micro_batch=settings.forward_micro_batch, device=settings.device, progress=progress)


@dataclass
class ForwardResult:
    family: str | None
    amax: dict[str, float] = field(default_factory=dict)  # checkpoint weight name -> input amax
    module_amax: dict[str, float] = field(default_factory=dict)  # diffusers Linear -> input amax
    module_out_amax: dict[str, float] = field(default_factory=dict)  # diffusers Linear -> output amax
    reason: str | None = None  # why nothing was reached, when nothing was
    config: dict = field(default_factory=dict)
    peak_live: int = 0  # most Linear weights materialised at once
    weights_read: int = 0
    seconds: float = 0.0
    # weights whose every Linear read one vector per sample (the conditioning path), in the order they ran
    per_sample: list[str] = field(default_factory=list)

    def reached(self, weight_name: str) -> bool:
        a = self.amax.get(weight_name)
        return a is not None and a == a and a != float("inf")


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Prepared:
    """What the forward pass will do, from the header alone: the family, its config, the row
    mapping (checked against the model built on the meta device), and which checkpoint weights
    feed a Linear of the model (the layers it reaches). `reason` says why it cannot run."""

    family: ModelCode | None
    reason: str | None = None
    config: dict = field(default_factory=dict)
    mapping: dict = field(default_factory=dict)
    scale_names: dict[str, str | None] = field(default_factory=dict)  # FP8 weight -> its weight scale
    reached: frozenset[str] = frozenset()
    detection: Detection | None = None  # what the detector said (also when the family has no model code)
    derived_key: str | None = None  # the cache key of what is derived from the header (None: not cached)


def prepare(header: Header) -> Prepared:
    """Detect the family, derive and check the mapping: header only, no weight is read. What
    is derived through diffusers comes from the user's cache when an earlier run of the same
    versions derived it from the same header layout (derived_cache.py)."""
    prefix, shapes = model_tensors({t.name: tuple(t.shape) for t in header.tensors})
    bare = {n[len(prefix):] if prefix and n.startswith(prefix) else n: s for n, s in shapes.items()}
    detection, family = forward_family(bare)
    if family is None:
        known = ", ".join(model_names())
        what = f"{detection.variant} has no model code here" if detection else "model family not recognised"
        return Prepared(None, f"{what} (the forward pass knows {known})", detection=detection)
    import_diffusers()
    key = derived_cache.header_key(header.tensors)
    cached = derived_cache.load(key, "prepared", derived_cache.prepared_from)
    if cached is not None:
        cfg, mapping, reached = cached[0]
        return Prepared(family, None, cfg, mapping, weight_scales(header), reached, detection, key)
    prepared = _derive(family, detection, prefix, shapes, bare)
    if prepared.reason is None:
        derived_cache.store(key, "prepared",
                            derived_cache.prepared_payload(prepared.config, prepared.mapping, prepared.reached))
        prepared.scale_names, prepared.derived_key = weight_scales(header), key
    return prepared


def _derive(family: ModelCode, detection: Detection, prefix: str, shapes: Mapping[str, tuple[int, ...]],
            bare: Mapping[str, tuple[int, ...]]) -> Prepared:
    """prepare's work through diffusers: the config, the mapping by its converter, checked
    against the model built on the meta device, and the checkpoint weights a Linear reads."""
    try:  # a pruned or partial file may lack what the family's configuration is sized from
        cfg = family.config(bare)
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as e:
        return Prepared(family, f"{detection.family}: cannot size the model from the file ({type(e).__name__}: {e})",
                        detection=detection)
    try:
        mapping = derive_mapping(shapes, prefix, lambda st: family.convert(st, cfg))
    except (MappingError, KeyError, RuntimeError, ValueError) as e:
        return Prepared(family, f"{detection.family}: diffusers' converter failed ({e})", cfg, detection=detection)
    try:
        model = meta_model(family, cfg, real_buffers=False)
    except ImportError as e:  # a text encoder's family needs transformers
        missing = f"{e.name or e} is not installed (pip install fp8stream[forward])"
        return Prepared(family, f"{detection.family}: {missing}", cfg, detection=detection)
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    params.update({n: tuple(b.shape) for n, b in model.named_buffers() if n in mapping})
    problems = check_mapping(mapping, params, shapes)
    if problems:
        return Prepared(family, f"{detection.family}: {problems[0]}", cfg, detection=detection)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    reached = frozenset(r.source for n in linears for r in mapping[n + WEIGHT])
    return Prepared(family, None, cfg, mapping, reached=reached, detection=detection)


def meta_model(family: ModelCode, cfg: dict, real_buffers: bool = True) -> torch.nn.Module:
    """The family's model built on the meta device, in eval mode: its parameters, and its buffers
    too unless `real_buffers` (the pass computes with the rotary tables the model builds). Names
    and shapes (prepare, the meta pass) need no real buffer: SD3.5's position table takes 0.9 s
    to compute on 2 cores, a full-width Flux's structure 0.1 s."""
    from fp8stream.methods.forward.engine import parameters_on_meta

    device = contextlib.nullcontext() if real_buffers else torch.device("meta")
    with parameters_on_meta(), device, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # diffusers' deprecation notes are not the user's business
        return family.model_class()(**cfg).eval()


def _no_grad_call(model: torch.nn.Module, kwargs: dict) -> None:
    with torch.no_grad():
        model(**kwargs, return_dict=False)


def _on(device: torch.device, kwargs: dict) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


@dataclass
class Streaming:
    """A pass set up and hooked (`streaming`): the model, its streaming weights, and each
    micro-batch's inputs on the device, in order."""

    model: torch.nn.Module
    sm: StreamingModel
    inputs: list[dict]  # each micro-batch's keyword arguments
    plan: SamplePlan  # the whole batch (its sampling times)
    state: Pass  # its ranges filled once the block exits


@contextlib.contextmanager
def streaming(source: RowSource, prepared: Prepared, settings: PassSettings,
              stop: threading.Event | None = None) -> Iterator[Streaming]:
    """The prepared model built on meta, its small rest loaded, hooked (one Linear's weight live
    at a time, the progress bar over the FP8 layers), the synthetic inputs drawn; the ranges
    are in `state` once the block exits. The caller runs the micro-batches (`in_step`)."""
    from fp8stream.methods.forward.engine import StreamingModel

    family, cfg = prepared.family, prepared.config
    model = meta_model(family, cfg)
    device = torch.device(settings.device)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    sources = fp8_sources(linears, prepared.mapping, prepared.scale_names)
    with pinned_threads(settings.threads), torch.no_grad(), \
            progress_bar("forward pass, FP8 layers", len(set().union(*sources.values())), "layer",
                         settings.progress, settings.bar_line) as bar:
        sm = StreamingModel(model, prepared.mapping, Reader(source, prepared.scale_names, device), device)
        sm.stop = stop
        sm.load_rest()
        plan = SamplePlan(settings.batch, settings.image_tokens, settings.text_tokens, settings.seed)
        size = settings.micro_batch or micro_batch_for(settings.batch, settings.image_tokens, settings.text_tokens)
        inputs = [_on(device, family.inputs(cfg, p)) for p in plan.split(size)]
        sm.sample_counts = frozenset(p.size for p in plan.split(size))
        with sm.hooked() as state:
            sm.on_linear = counting(sources, bar)
            yield Streaming(model, sm, inputs, plan, state)


def in_step(sm: StreamingModel, calls: list) -> None:
    """Run the calls (each one micro-batch's forward); several in lock step, so each Linear's
    weight is read once for all of them."""
    from fp8stream.methods.forward.lockstep import Lockstep

    if len(calls) == 1:
        calls[0]()
    else:
        sm.lockstep = Lockstep(len(calls))
        sm.lockstep.run(calls)


class MoreStreams(Protocol):
    """Streams run in lock step with the pass's own, which they only observe (calibrate's
    prediction: methods/forward/prediction.py). `wanted`: whether they run (it may wait to be
    told, until `stop`); `run`: the micro-batches of the pass set up, with the streams (Diverged:
    they parted ways); `diverged`: they did, and the pass runs again alone."""

    def wanted(self, stop: threading.Event | None) -> bool: ...

    def run(self, s: Streaming, prepared: Prepared) -> None: ...

    def diverged(self, error: Diverged) -> None: ...


def run(source: RowSource, prepared: Prepared, settings: PassSettings = PassSettings(),
        stop: threading.Event | None = None) -> ForwardResult:
    """The forward pass over the prepared model; a result with `reason` when it cannot run.
    `stop`, once set, ends it at its next Linear (engine.PassStopped). `settings.more_streams`
    run with it where they are wanted; the result is the pass's alone either way."""
    from fp8stream.methods.forward.engine import Diverged

    family = prepared.family
    if prepared.reason is not None:
        return ForwardResult(prepared.detection.family if family else None, reason=prepared.reason,
                             config=prepared.config)
    more = settings.more_streams if settings.more_streams is not None and settings.more_streams.wanted(stop) else None
    start = time.monotonic()
    try:
        with streaming(source, prepared, settings, stop) as s:
            if more is not None:
                more.run(s, prepared)
            else:  # no_grad is per thread: each micro-batch's call sets it in the thread that runs it
                in_step(s.sm, [functools.partial(_no_grad_call, s.model, kwargs) for kwargs in s.inputs])
    except Diverged as e:
        if more is None:
            raise
        more.diverged(e)
        return run(source, prepared, dataclasses.replace(settings, more_streams=None), stop)
    return result_of(s, prepared, start)


def result_of(s: Streaming, prepared: Prepared, start: float) -> ForwardResult:
    """The result of a pass `streaming` ran (its block exited: the ranges read back)."""
    sm, state, cfg = s.sm, s.state, prepared.config
    return ForwardResult(prepared.detection.family, sm.layer_amax(prepared.family.value_sources(cfg)),
                         dict(state.amax), dict(state.out_amax), None, cfg, state.peak_live, state.weights_read,
                         time.monotonic() - start, sm.layer_per_sample())
