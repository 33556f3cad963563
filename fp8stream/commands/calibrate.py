"""`fp8stream calibrate IN OUT` or `IN... --out-dir DIR`: an input_scale for every FP8 linear layer."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import click

from fp8stream.batch import BatchSettings, batch_exit_code, expand_inputs, plan_outputs, run_batch
from fp8stream.commands.common import EXIT_CODES, append_report, run_guarded
from fp8stream.commands.flags import REPORT, STORAGE_OPTIONS, SectionedCommand, options, ordered
from fp8stream.commands.preflight import check_patterns
from fp8stream.errors import UsageError
from fp8stream.io.compression import (
    DEFAULT_COMPRESSION_BUDGET,
    ZstdSettings,
    check_compression_memory,
    default_threads,
    fitting_threads,
    is_zstd_path,
)
from fp8stream.io.sink import check_output_name
from fp8stream.memory import BASE_MEMORY, memory_budget
from fp8stream.methods.registry import METHOD
from fp8stream.methods.settings import CalibrationSettings, resolve_device
from fp8stream.options import BATCH, COMMON, Flag, flags_of, values_of
from fp8stream.remote import configure as configure_storage, parse_storage_options
from fp8stream.report import FileReport
from fp8stream.report_table import render_table
from fp8stream.rewrite import RewriteOptions, calibrate_file


@dataclass(frozen=True)
class ReportOptions:
    """How the report is given: JSON or the table (grouped, or a line per layer), and where."""

    as_json: bool
    verbose: bool
    report_file: str | None


def _emit(report: FileReport, how: ReportOptions, stdout_taken: bool) -> None:
    """The report goes to --report FILE, else JSON to stdout and the table to stderr; never into
    stdout when the checkpoint itself goes there."""
    as_json, report_file = how.as_json, how.report_file
    text = report.to_json() if as_json else render_table(report, verbose=how.verbose)
    if report_file:
        append_report(report_file, text)
    else:
        click.echo(text, err=not as_json or stdout_taken)


def _zstd_settings(level: int, threads: int | None, budget: int) -> ZstdSettings:
    """The level and worker count, checked against the memory zstd may take."""
    if threads is None:  # not asked for: as many workers as fit
        settings = ZstdSettings(level, fitting_threads(level, default_threads(), budget))
    else:
        settings = ZstdSettings(level, threads)
    check_compression_memory(settings, budget)
    return settings


# calibrate's own options; the others are declared beside what they set (the methods' settings,
# RewriteOptions, BatchSettings) or shared with zoo (commands/flags.py).
OWN_FLAGS = (
    Flag(("--out-dir",), BATCH, "Batch: write each IN to DIR under its own name.", type="dir"),
    Flag(("--json",), COMMON, "One JSON line per input file on stdout (stderr when OUT is '-') instead of the "
         "table, which always goes to stderr so that stdout stays free for the checkpoint and for pipes.",
         type="bool", dest="as_json"),
    Flag(("--verbose",), COMMON, "The table gives a line per layer (shape, scale, what it rests on) instead of one "
         "per reason.", type="bool"),
    Flag(("--zstd",), BATCH, "Compress stdout ('-') or the --out-dir outputs with zstd (OUT named *.zst is always "
         "compressed; compressed input is detected by itself).", type="bool"),
    Flag(("--zstd-level",), BATCH, "zstd compression level (1-22).", default=3, type="int"),
    Flag(("--zstd-threads",), BATCH, "zstd compression workers; 0: in the calling thread [default: up to 4 that "
         "fit the memory].", type="int", range=(0, 64)),
)
FLAGS = ordered((METHOD, *flags_of(CalibrationSettings), *flags_of(RewriteOptions), *flags_of(BatchSettings),
                 *OWN_FLAGS, REPORT, STORAGE_OPTIONS),
                first=("force", "device", "verify", "as_json", "method", "seed", "dry_run", "report_file", "verbose",
                       "progress", "out_dir"))


@click.command(cls=SectionedCommand, epilog=EXIT_CODES)
@click.argument("paths", metavar="IN... [OUT]", nargs=-1, required=True, type=click.Path(allow_dash=True))
@options(FLAGS)
def calibrate(paths: tuple[str, ...], **params: Any) -> None:
    """Calibrate IN and write the result to OUT, or several INs (paths or globs) into --out-dir.

    Every FP8 linear layer gets an F32 activation scale (input_scale); all other tensors pass
    through byte for byte, and OUT appears only when complete. '-' reads stdin or writes stdout;
    zstd is detected, and an OUT ending in .zst is compressed. The default --method auto runs a
    synthetic forward pass where it can, else the bound of simulate (docs/usage.md)."""
    method_given = click.get_current_context().get_parameter_source("method") != click.core.ParameterSource.DEFAULT
    if params["stats"] and not method_given:
        params["method"] = "stats"  # --stats FILE alone means: use it
    if params["stats"] and params["method"] != "stats":
        raise click.UsageError("--stats is used only with --method stats")

    def body() -> int:
        configure_storage(parse_storage_options(params["storage_json"]))
        max_memory, zstd = params["max_memory"], params["zstd"]
        budget = memory_budget(max_memory) if max_memory else None
        inputs, output, batch = _resolve_paths(paths, params["out_dir"], params["dry_run"])
        compress = zstd if batch else bool(output) and (is_zstd_path(output) or (zstd and output == "-"))
        if output and not batch:
            check_output_name(output, zstd, compress)
        # zstd may take 128 MB by default; with --max-memory, what the budget leaves beside the base.
        zstd_budget = budget - BASE_MEMORY if budget else DEFAULT_COMPRESSION_BUDGET
        zstd_settings = _zstd_settings(params["zstd_level"], params["zstd_threads"], zstd_budget) if compress else None
        progress = sys.stderr.isatty() if params["progress"] is None else params["progress"]
        template = RewriteOptions(**{**values_of(RewriteOptions, params), "progress": progress}, input=inputs[0],
                                  output=output, settings=calibration_settings(params), zstd=zstd_settings)
        batch_settings = BatchSettings(params["keep_going"], params["jobs"], budget)
        return _run(template, inputs, params["out_dir"] if batch else None, compress, batch_settings,
                    ReportOptions(params["as_json"], params["verbose"], params["report_file"]))

    code = run_guarded(body)
    if code:
        sys.exit(code)


def calibration_settings(params: dict[str, Any]) -> CalibrationSettings:
    """The settings from the command line's values: the device resolved, --fallback none as None."""
    values = values_of(CalibrationSettings, params)
    values.update(method=params["method"], device=resolve_device(params["device"], params["method"]),
                  fallback=None if params["fallback"] == "none" else params["fallback"])
    return CalibrationSettings(**values)


def _run(template: RewriteOptions, inputs: list[str], out_dir: str | None, compress: bool,
         batch_settings: BatchSettings, how: ReportOptions) -> int:
    """One file, or a batch into out_dir, once every option has been checked."""
    notes = check_patterns(inputs, template.include, template.exclude)  # a typo'd pattern: exit 2 before any file
    if out_dir is None:
        report = calibrate_file(template)
        _emit(report, how, template.output == "-")
        return report.exit_code
    items = plan_outputs(inputs, out_dir, compress)  # refuses clashing names before any work

    def emit(report: FileReport) -> None:
        report.notes += notes.get(report.input, [])
        _emit(report, how, False)

    with output_folder(out_dir):
        reports = run_batch(items, template, batch_settings, emit)
    return batch_exit_code(reports)


@contextmanager
def output_folder(path: str) -> Iterator[None]:
    """--out-dir, created for the run and removed again if the run leaves nothing in it (every
    file failed or was refused): no stray empty folder."""
    created = not os.path.isdir(path)
    os.makedirs(path, exist_ok=True)
    try:
        yield
    finally:
        if created and os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)


def _resolve_paths(paths: tuple[str, ...], out_dir: str | None, dry_run: bool) -> tuple[list[str], str | None, bool]:
    """(inputs, output, batch?): IN OUT; IN with --dry-run; IN... with --out-dir."""
    if out_dir is not None:
        if dry_run:
            raise UsageError("--dry-run takes one IN, not --out-dir")
        return expand_inputs(list(paths)), None, True
    if len(paths) == 2:
        return [paths[0]], paths[1], False
    if len(paths) == 1 and dry_run:
        return [paths[0]], None, False
    if len(paths) == 1:
        raise UsageError("OUT is required (or use --dry-run, or --out-dir DIR for a batch)")
    raise UsageError(f"{len(paths)} paths given: several inputs need --out-dir DIR")
