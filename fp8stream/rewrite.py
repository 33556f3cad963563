"""`calibrate_file`: one checkpoint (a file, '-', or a sharded folder) read -> plan -> calibrate -> write.

Every file of the model is read once, front to back (`pipeline.loop`); the output layout of each
is fixed from the headers before any data moves (`formats.plan`); the calibration method sees the
stream through its declared interface (`calibration.interface`); the activation scales, known
only after the last byte, are resolved for the whole model at once (`pipeline.scales`) and
written in each file's tail; each output is checked (`pipeline.check`) before it is renamed into
place. A sharded model streams its shards in turn into one `io.sharded.ShardedOutput`, so it
gets the same scales as the same model in one file. Nothing here imports torch at import time,
so `fp8stream --help`, `inspect` and `verify` never load it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from fp8stream.calibration.interface import CalibrationMethod, MethodPlan, ModelView
from fp8stream.calibration.settings import CalibrationSettings
from fp8stream.errors import EXIT_UNSCALED, NothingToCalibrateError, UsageError
from fp8stream.families.detect import detect, header_shapes
from fp8stream.formats.format_notes import format_note
from fp8stream.formats.layers import take_inventory
from fp8stream.formats.plan import build_plan, plan_layers
from fp8stream.formats.plan_types import FormatOptions, LayerPlan, RewritePlan
from fp8stream.formats.selection import PRESET_NAMES, Selection
from fp8stream.formats.shards import output_index
from fp8stream.interrupts import deferred
from fp8stream.io.compression import ZstdSettings
from fp8stream.io.storage import Location, locate, open_urls_with
from fp8stream.options import COMMON, LAYERS, OUTPUT, flag
from fp8stream.pipeline.inputs import ModelInput, open_model
from fp8stream.pipeline.outputs import OutputTarget, check_output, open_outputs
from fp8stream.pipeline.scales import Resolved, excluded_reports, layer_reports, resolve
from fp8stream.remote.location import UrlLocation
from fp8stream.report import FileReport, SkippedReport, human_size

if TYPE_CHECKING:
    from fp8stream.pipeline.run import RunSettings

open_urls_with(UrlLocation)  # URLs (IN, OUT, shards) are read and written by remote/ (docs/remote.md)


@dataclass
class RewriteOptions:
    """One file's run: what it reads and writes, the calibration settings, and the options of
    the output's format and layers (their flags declared here)."""

    input: str
    output: str | None  # None with dry_run
    settings: CalibrationSettings = field(default_factory=CalibrationSettings)
    overwrite_scales: bool = flag(False, "--overwrite-scales", section=OUTPUT, type="bool",
                                  help="Replace every existing input scale, real ones too.")
    keep_weight_only: bool = flag(False, "--keep-weight-only", section=OUTPUT, type="bool",
                                  help="Keep full_precision_matrix_mult on layers that have it (scales added, "
                                       "unused by ComfyUI).")
    target: str = flag("auto", "--target", section=OUTPUT, choices=("auto", "comfy", "legacy"),
                       help="Flavour written: auto keeps the file's (comfy for plain fp8); comfy converts legacy "
                            "scaled_fp8; legacy adds scaled_fp8 keys to plain fp8.")
    include: tuple[str, ...] = flag((), "--include", section=LAYERS, multiple=True, metavar="GLOB",
                                    help="Calibrate only layers whose name matches (repeatable; prefix-free names "
                                         "match too).")
    exclude: tuple[str, ...] = flag((), "--exclude", section=LAYERS, multiple=True, metavar="GLOB",
                                    help="Keep matching layers weight-only (full_precision_matrix_mult) instead of "
                                         "calibrating them.")
    preset: str | None = flag(None, "--preset", section=LAYERS, choices=PRESET_NAMES,
                              help="Exclude what the reference recipes keep in high precision: embedders, final "
                                   "projections, first/last blocks of video DiTs. auto: from the key names.")
    exclude_untouched: bool = flag(False, "--exclude-untouched", section=LAYERS, type="bool",
                                   help="Leave excluded layers exactly as they were (else they are flagged "
                                        "weight-only).")
    force: bool = flag(False, "--force", "-f", section=COMMON, type="bool", help="Replace an output that exists.")
    dry_run: bool = flag(False, "--dry-run", section=COMMON, type="bool", help="Plan and report; write nothing.")
    progress: bool = flag(False, "--progress/--no-progress", section=COMMON, type="bool", cli_default=None,
                          help="Progress bar on stderr (default: when stderr is a terminal).")
    # hash the input while reading, re-read the output and compare
    verify: bool = flag(False, "--verify", section=COMMON, type="bool",
                        help="Hash every tensor while reading IN, re-read OUT before it replaces anything and "
                             "compare (passthrough tensors must be identical).")
    zstd: ZstdSettings | None = None  # compress the output

    def format_options(self) -> FormatOptions:
        return FormatOptions(keep_weight_only=self.keep_weight_only, target=self.target,
                             selection=Selection(tuple(self.include), tuple(self.exclude), self.preset),
                             exclude_untouched=self.exclude_untouched)


@dataclass(frozen=True)
class Stages:
    """`RewriteOptions` resolved once, at the top of `calibrate_file`: what each stage is handed."""

    input: Location
    output: OutputTarget | None  # None: a dry run without OUT
    layout: FormatOptions  # the plan's: the output's format and layers
    settings: CalibrationSettings  # the method's
    run: RunSettings  # the streaming run's (and the scales', the self-check's, the progress shown)
    dry_run: bool


@dataclass
class Planned:
    """Everything decided from the headers: per file plans, whole-model layer plans, the method's."""

    files: list[RewritePlan]
    layers: list[LayerPlan]  # every FP8 layer of the model, in layer order
    view: ModelView

    @property
    def calibrated(self) -> list[LayerPlan]:
        return [p for p in self.layers if p.calibrated]

    @property
    def excluded(self) -> list[LayerPlan]:
        return [p for p in self.layers if not p.calibrated]


def calibrate_file(options: RewriteOptions) -> FileReport:
    """Calibrate one checkpoint; raises FP8StreamError for anything a user can cause."""
    from fp8stream.pipeline.run import RunSettings  # numpy: loaded once a file is calibrated, not by inspect or verify

    started = time.monotonic()
    output = None if options.output is None else OutputTarget(locate(options.output), options.force, options.zstd)
    run = RunSettings(options.settings.device, options.keep_weight_only, options.overwrite_scales, options.verify,
                      options.progress)
    stages = Stages(locate(options.input), output, options.format_options(), options.settings, run, options.dry_run)
    report = FileReport(options.input, options.output, compressed=options.zstd is not None)
    _rewrite(stages, report)
    report.seconds = time.monotonic() - started
    return report


def _rewrite(stages: Stages, report: FileReport) -> None:
    """Read, plan, check OUT, then the run (or the dry run); the report filled as it goes."""
    with open_model(stages.input) as model, contextlib.ExitStack() as stack:
        source = model.tensor_source()
        spooled = (source is None and stages.settings.spool and not stages.dry_run
                   and _method_reads_by_name(model, stages))
        if spooled:
            model = stack.enter_context(_spool(model, stages.output, stages.run.progress))
            source = model.tensor_source()
        if source is not None:
            stack.callback(source.close)
        planned = _plan(model, stages, ModelView(model.whole, [], source, progress=stages.run.progress))
        report.bytes_in = model.bytes_in
        report.bytes_out = sum(p.output_bytes for p in planned.files)
        report.skipped = [SkippedReport(s.name, s.reason) for s in take_inventory(model.whole).skipped]
        family = detect(header_shapes(model.whole))
        report.family = family.to_json() if family else None
        if not planned.layers:
            raise NothingToCalibrateError(f"{report.input}: no FP8 linear layer to calibrate")
        if stages.output is not None:
            check_output(stages.output, model, report.bytes_out, stages.run.verify)
        if stages.dry_run:
            _dry_run(model, planned, stages, report)
        else:
            _calibrate(model, planned, stages, report)
            if spooled:
                report.notes.append(f"the stream was spooled to a temporary file ({human_size(model.bytes_in)}, "
                                    "removed) for the forward pass; --no-spool keeps it one pass (the bound)")
        if not report.layers:  # written (or would be), but every FP8 layer runs weight-only: the exit code says so
            report.status = "unscaled" if report.status == "ok" else report.status
            report.exit_code = EXIT_UNSCALED


def _plan(model: ModelInput, stages: Stages, view: ModelView, method: MethodPlan | None = None) -> Planned:
    """Every file's plan and the whole model's layer plans; with the method's plan, its layers
    kept weight-only (given a scale or not) change the layout."""
    describe = stages.settings.describe()
    whole = model.whole if model.sharded else None
    method = method or MethodPlan()
    files = [build_plan(part.header, describe, stages.layout, whole, method.weight_only, method.scaled_weight_only)
             for part in model.parts]
    layers = plan_layers(take_inventory(model.whole), stages.layout, method.weight_only, method.scaled_weight_only)
    return Planned(files, layers, replace(view, layers=[p.layer for p in layers if p.calibrated]))


def _dry_run(model: ModelInput, planned: Planned, stages: Stages, report: FileReport) -> None:
    """The run's decisions without its work: the method decides from the header (its meta pass,
    no weight read, no pass run), the small tensors that decide kept/replaced are read by name."""
    from fp8stream.calibration.registry import create
    from fp8stream.pipeline.dry_run import dry_run_facts, dry_run_state

    with contextlib.closing(create(stages.settings)) as method:
        method_plan = method.prepare(replace(planned.view, dry_run=True))
    planned = _plan(model, stages, planned.view, method_plan)
    source = planned.view.source
    state = dry_run_state(planned.files, source, stages.layout.keep_weight_only) if source else None
    _fill(report, planned, dry_run_facts(planned.calibrated, state), state.out_weight_only if state else {}, None,
          stages)
    report.bytes_out = sum(p.output_bytes for p in planned.files)
    report.notes = list(method_plan.notes) + format_note(planned.layers, method_plan.scaled_weight_only)
    report.undecided = sorted(method_plan.undecided)
    if method_plan.undecided:
        report.notes.append(f"dry run: {len(method_plan.undecided)} layers undecided: "
                            f"{next(iter(method_plan.undecided.values()))}")
    report.status = "dry-run"


def _method_reads_by_name(model: ModelInput, stages: Stages) -> bool:
    """Whether the method, prepared on this stream's header, would read tensors by name (the
    forward pass): then the stream is spooled to a file first (pipeline/spool.py)."""
    from fp8stream.calibration.registry import create

    planned = _plan(model, stages, ModelView(model.whole, [], None))
    if not planned.layers:
        return False
    with contextlib.closing(create(stages.settings)) as method:
        return _prepare(method, planned.view, stages.run.progress).needs_random_access


def _prepare(method: CalibrationMethod, view: ModelView, progress: bool) -> MethodPlan:
    """The method prepared from the header (imports, the meta pass: seconds), its phase shown."""
    from fp8stream.progress import PREPARING, phase

    with phase(PREPARING, progress), deferred():  # a signal ends the run once prepare is done (torch's import)
        return method.prepare(view)


def _spool(model: ModelInput, output: OutputTarget | None, progress: bool):
    """The stream written to a temporary file, once the output checks that need no data passed."""
    from fp8stream.pipeline.spool import spooled

    if output is not None:
        output.location.check_target(None, output.force)
    compressed = output is not None and output.zstd is not None
    out_bytes = 0 if compressed else model.whole.file_bytes  # about the output's size
    return spooled(model, output.location if output is not None else None, out_bytes, progress)


def _fill(report: FileReport, planned: Planned, facts, out_weight_only, estimates,
          stages: Stages) -> dict[str, Resolved]:
    """The report's per-layer part, built from the resolved values (which are returned)."""
    resolved = resolve(planned.calibrated, facts, estimates, stages.run.overwrite_scales, stages.settings.method)
    report.layers = layer_reports(planned.calibrated, facts, resolved)
    report.excluded = excluded_reports(planned.excluded, out_weight_only)
    return resolved


def _calibrate(model: ModelInput, planned: Planned, stages: Stages, report: FileReport) -> None:
    """The real run: the method prepared, every file streamed, scales resolved, tails written;
    the method closed after, whatever happened (its forward pass's thread stopped)."""
    from fp8stream.calibration.registry import create

    with contextlib.closing(create(stages.settings)) as method:
        _run_method(method, model, planned, stages, report)


def _run_method(method: CalibrationMethod, model: ModelInput, planned: Planned, stages: Stages,
                report: FileReport) -> None:
    """Prepare the method, stream every file through it, resolve the scales, write the tails."""
    from fp8stream.pipeline.run import finish_files, stream_model

    if stages.run.device == "cuda":  # the peak VRAM reported covers prepare (a forward pass) too
        import torch

        torch.cuda.reset_peak_memory_stats()
    method_plan = _prepare(method, planned.view, stages.run.progress)
    if method_plan.needs_random_access and planned.view.source is None:
        raise UsageError(f"--method {stages.settings.method} reads tensors by name: give a file or a sharded "
                         "folder, not a pipe or a compressed stream, or let it spool (no --no-spool)")
    if method_plan.weight_only or method_plan.scaled_weight_only:  # the layout changes: plan again
        planned = _plan(model, stages, planned.view, method_plan)
        report.bytes_out = sum(p.output_bytes for p in planned.files)
    report.notes = list(method_plan.notes) + format_note(planned.layers, method_plan.scaled_weight_only)
    assert stages.output is not None  # OUT is None only with a dry run
    with contextlib.ExitStack() as stack:
        sharded, sinks = open_outputs(stack, stages.output, model)
        run = stream_model(model, planned.files, planned.calibrated, planned.view, method, method_plan, sinks,
                           stages.run)
        resolved = _fill(report, planned, run.facts, run.out_weight_only, run.estimates, stages)
        summaries = finish_files(run.files, resolved, stages.run.verify)
        if sharded is not None:
            entries = {f.name: [e.name for e in f.plan.entries] for f in run.files}
            sharded.finalize(model.index.name, output_index(model.index, entries, report.bytes_out))
    report.verify = "; ".join(summaries) or None
    report.bytes_written = sum(sink.bytes_written for sink, _ in sinks)
    report.peak_vram_bytes = run.peak_vram_bytes
