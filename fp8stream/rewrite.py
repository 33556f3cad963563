"""`calibrate_file`: one checkpoint (a file, '-', or a sharded folder) read -> plan -> calibrate -> write.

Every file of the model is read once, front to back (`pipeline.loop`); the output layout of each
is fixed from the headers before any data moves (`formats.plan`); the calibration method sees the
stream through its declared interface (`calibration.interface`); the activation scales, known
only after the last byte, are resolved for the whole model at once (`pipeline.scale_resolution`) and
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

from fp8stream.errors import EXIT_UNSCALED, NothingToCalibrateError, UsageError
from fp8stream.families.detect import detect, header_shapes
from fp8stream.formats.format_notes import format_note
from fp8stream.formats.layers import take_inventory
from fp8stream.formats.plan import build_plan, plan_layers
from fp8stream.formats.plan_types import FormatOptions, LayerPlan, RewritePlan
from fp8stream.formats.room import check_kept
from fp8stream.formats.selection import PRESET_NAMES, Selection
from fp8stream.formats.shards import output_index
from fp8stream.interrupts import deferred
from fp8stream.io.compression import ZstdSettings
from fp8stream.io.storage import Location, locate, open_urls_with
from fp8stream.methods.interface import CalibrationMethod, MethodPlan, ModelView
from fp8stream.methods.settings import CalibrationSettings
from fp8stream.options import COMMON, LAYERS, OUTPUT, flag
from fp8stream.pipeline.inputs import ModelInput, open_model
from fp8stream.pipeline.outputs import OutputTarget, check_output
from fp8stream.pipeline.scale_resolution import Resolved, excluded_reports, layer_reports, resolve
from fp8stream.pipeline.spool import spooled
from fp8stream.remote.location import UrlLocation
from fp8stream.report import FileReport, SkippedReport, human_size

if TYPE_CHECKING:
    from fp8stream.pipeline.head_start import OpenOutputs
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
                             "compare (passthrough tensors must be identical). It costs reads: the copy streams, so "
                             "the default's forward pass reads IN's weights a second time, and OUT is read back "
                             "once (a 1.4 GB Flux file, cold, 2 cores: 1.5x a plain run's time).")
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
    """Everything decided from the headers: per file plans and the whole model's layer plans."""

    files: list[RewritePlan]
    layers: list[LayerPlan]  # every FP8 layer of the model, in layer order

    @property
    def calibrated(self) -> list[LayerPlan]:
        return [p for p in self.layers if p.calibrated]

    @property
    def excluded(self) -> list[LayerPlan]:
        return [p for p in self.layers if not p.calibrated]

    @property
    def output_bytes(self) -> int:
        return sum(p.output_bytes for p in self.files)


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
    """IN opened and its layout planned, OUT checked (a file to a file: opened, the head start's
    copy begun before torch is imported); the method created and prepared once (a stream that it
    reads by name spooled first), the header planned again where it keeps layers weight-only."""
    from fp8stream.methods.interface import create
    from fp8stream.pipeline.head_start import open_early  # numpy: once a file is calibrated

    calibration = stages.settings.describe()  # recorded in every file's metadata
    with open_model(stages.input) as model, contextlib.ExitStack() as opened, contextlib.ExitStack() as held:
        planned = _plan(model, stages.layout, calibration)
        _describe_input(report, model, planned)
        if stages.output is not None:
            check_output(stages.output, model, report.bytes_out, stages.run.verify)
        early = open_early(held, None if stages.dry_run else stages.output, model, planned.files, stages.run.verify,
                           stages.settings)
        with contextlib.closing(create(stages.settings)) as method:  # closed before IN: its pass may read it
            view = ModelView(model.whole, [p.layer for p in planned.calibrated], model.tensor_source(), stages.dry_run,
                             stages.run.progress)
            model, view, method_plan, spooled_bytes = _prepared(opened, model, method, view, stages)
            if method_plan.weight_only or method_plan.scaled_weight_only:  # the header and tail change: plan again
                planned = _plan(model, stages.layout, calibration, method_plan, planned)
                view = replace(view, layers=[p.layer for p in planned.calibrated])
                report.bytes_out = planned.output_bytes
            report.notes = list(method_plan.notes) + format_note(planned.layers, method_plan.scaled_weight_only)
            if stages.dry_run:
                _dry_run(planned, view, method_plan, stages, report)
            else:
                _calibrate(method, method_plan, model, planned, view, stages, report, early)
            if spooled_bytes:
                report.notes.append(f"the stream was spooled to a temporary file ({human_size(spooled_bytes)}, "
                                    "removed) for the forward pass; --no-spool keeps it one pass (the bound)")
        if not report.layers:  # written (or would be), but every FP8 layer runs weight-only: the exit code says so
            report.status = "unscaled" if report.status == "ok" else report.status
            report.exit_code = EXIT_UNSCALED


def _plan(model: ModelInput, layout: FormatOptions, calibration: dict[str, object],
          method: MethodPlan | None = None, before: Planned | None = None) -> Planned:
    """Every file's plan and the whole model's layer plans; with the method's plan, its layers
    kept weight-only change the header and tail, not data places `before` fixed (formats/room.py)."""
    whole = model.whole if model.sharded else None
    method = method or MethodPlan()
    rooms = [(f.header_room, f.data_fixed) for f in before.files] if before else [None] * len(model.parts)
    files = [build_plan(part.header, calibration, layout, whole, method.weight_only, method.scaled_weight_only, room)
             for part, room in zip(model.parts, rooms, strict=True)]
    for early, final in zip(before.files, files, strict=True) if before else ():
        check_kept(early, final)
    layers = plan_layers(take_inventory(model.whole), layout, method.weight_only, method.scaled_weight_only)
    return Planned(files, layers)


def _describe_input(report: FileReport, model: ModelInput, planned: Planned) -> None:
    """What the report says of IN before any work: sizes, layers skipped, the family."""
    report.bytes_in = model.bytes_in
    report.bytes_out = planned.output_bytes
    report.skipped = [SkippedReport(s.name, s.reason) for s in take_inventory(model.whole).skipped]
    family = detect(header_shapes(model.whole))
    report.family = family.to_json() if family else None
    if not planned.layers:
        raise NothingToCalibrateError(f"{report.input}: no FP8 linear layer to calibrate")


def _prepared(opened: contextlib.ExitStack, model: ModelInput, method: CalibrationMethod, view: ModelView,
              stages: Stages):
    """(IN as the method reads it, its view, the method's plan, the bytes spooled): a stream that
    the method reads by name (asked from the header) is spooled to a file first, its header
    handed on (pipeline/spool.py); the view says whether the copy takes its bytes from the
    method's reads (IN and OUT local files: written at fixed places); then the method is
    prepared, once (imports, the meta pass: seconds, shown as preparing; a signal acts once each
    is done). By-name reads close with IN."""
    from fp8stream.pipeline.placed_run import copy_shares_reads
    from fp8stream.progress import PREPARING, phase

    settings, output = stages.settings, stages.output
    shown = view.progress and not view.dry_run
    spooled_bytes = 0
    if view.source is None and not view.dry_run:
        with phase(PREPARING, shown and settings.spool), deferred():
            reads = method.needs_random_access(view)
        if reads and not settings.spool:
            raise UsageError(f"--method {settings.method} reads tensors by name: give a file or a sharded folder, "
                             "not a pipe or a compressed stream, or let it spool (no --no-spool)")
        if reads:
            model = opened.enter_context(spooled(model, output, view.progress))
            view, spooled_bytes = replace(view, source=model.tensor_source()), model.bytes_in
    if view.source is not None:
        opened.callback(view.source.close)
    view = replace(view, copy_takes_reads=not view.dry_run and copy_shares_reads(model, output, stages.run.verify))
    if settings.device == "cuda" and not view.dry_run:  # the peak VRAM reported covers prepare (a forward pass) too
        import torch

        torch.cuda.reset_peak_memory_stats()
    with phase(PREPARING, shown), deferred():
        return model, view, method.prepare(view), spooled_bytes


def _dry_run(planned: Planned, view: ModelView, method_plan: MethodPlan, stages: Stages, report: FileReport) -> None:
    """The run's decisions without its work: the method decided from the header (its meta pass,
    no weight read, no pass run), the small tensors that decide kept/replaced are read by name."""
    from fp8stream.pipeline.dry_run import dry_run_facts, dry_run_state
    from fp8stream.pipeline.prediction import NO_PASS

    state = dry_run_state(planned.files, view.source, stages.run.keep_weight_only) if view.source else None
    _fill(report, planned, dry_run_facts(planned.calibrated, state), state.out_weight_only if state else {}, None,
          stages.run, stages.settings.method)
    report.undecided = sorted(method_plan.undecided)
    report.prediction_reason = method_plan.no_prediction or NO_PASS
    if method_plan.undecided:
        report.notes.append(f"dry run: {len(method_plan.undecided)} layers undecided: "
                            f"{next(iter(method_plan.undecided.values()))}")
    report.status = "dry-run"


def _fill(report: FileReport, planned: Planned, facts, out_weight_only, estimates, run: RunSettings,
          method: str) -> dict[str, Resolved]:
    """The report's per-layer part, built from the resolved values (which are returned)."""
    resolved = resolve(planned.calibrated, facts, estimates, run.overwrite_scales, method)
    report.layers = layer_reports(planned.calibrated, facts, resolved)
    report.excluded = excluded_reports(planned.excluded, out_weight_only)
    return resolved


def _calibrate(method: CalibrationMethod, method_plan: MethodPlan, model: ModelInput, planned: Planned,
               view: ModelView, stages: Stages, report: FileReport, early: OpenOutputs | None) -> None:
    """The real run: every file streamed through the method, the scales resolved, the tails
    written and each output checked before it replaces anything."""
    from fp8stream.pipeline import prediction
    from fp8stream.pipeline.check import note_verify_cost
    from fp8stream.pipeline.head_start import take_outputs
    from fp8stream.pipeline.run import finish_files, stream_model

    assert stages.output is not None  # OUT is None only with a dry run
    read = prediction.ask(method_plan, planned.files, planned.layers, view.source, stages.run, stages.settings.method)
    read_before = view.source.bytes_read if view.source is not None else 0  # what prepare read is not the run's
    with contextlib.ExitStack() as stack:  # `early`: OUT opened before the method, copied into
        sharded, sinks, head = take_outputs(stack, early, stages.output, model)
        run = stream_model(model, planned.files, planned.calibrated, view, method, method_plan, sinks, stages.run,
                           head)
        resolved = _fill(report, planned, run.facts, run.out_weight_only, run.estimates, stages.run,
                         stages.settings.method)
        summaries = finish_files(run.files, resolved, stages.run.verify)
        prediction.fill(report, method_plan, read, planned.layers, run.facts, resolved)
        if sharded is not None:
            entries = {f.name: [e.name for e in f.plan.entries] for f in run.files}
            sharded.finalize(model.index.name, output_index(model.index, entries, report.bytes_out))
    report.verify = "; ".join(summaries) or None
    report.bytes_written = sum(sink.bytes_written for sink, _ in sinks)
    report.peak_vram_bytes = run.peak_vram_bytes
    if report.verify is not None:
        by_name = view.source.bytes_read - read_before if view.source is not None else 0
        note_verify_cost(report, model, stages.output, by_name)
