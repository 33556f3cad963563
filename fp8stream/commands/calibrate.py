"""`fp8stream calibrate IN OUT` or `IN... --out-dir DIR`: an input_scale for every FP8 linear layer."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import click

from fp8stream.batch import BatchSettings, batch_exit_code, expand_inputs, plan_outputs, run_batch
from fp8stream.calibration.registry import method_help, method_names
from fp8stream.calibration.settings import RULES, SIM_MODES, CalibrationSettings, resolve_device
from fp8stream.commands.common import EXIT_CODES, run_guarded
from fp8stream.commands.preflight import check_patterns
from fp8stream.errors import UsageError
from fp8stream.formats.selection import PRESET_NAMES
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
        with open(report_file, "a", encoding="utf-8") as f:
            f.write(text + "\n")
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


@click.command(epilog=EXIT_CODES)
@click.argument("paths", metavar="IN... [OUT]", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--out-dir", type=click.Path(file_okay=False), help="Batch: write each IN to DIR under its own name.")
@click.option("--method", type=click.Choice(method_names()), default="auto", show_default=True,
              help=f"Where activation ranges come from. {method_help()}.")
@click.option("--sim-mode", type=click.Choice(SIM_MODES), default="bound", show_default=True,
              help="simulate: bound = hard bound from the producers' weights; hybrid = --margin x Gaussian "
                   "estimate, capped by the bound; note = the research note's approach 2 (comparison only).")
@click.option("--margin", type=click.FloatRange(1.0, 1e6), default=4.0, show_default=True,
              help="--sim-mode hybrid: multiple of the Gaussian estimate.")
@click.option("--forward-margin", type=click.FloatRange(1.0, 1e6), default=None,
              help="--method forward: scale = MARGIN x the forward pass's input amax (capped by the hard bound) "
                   "[default: 3 for DiTs, 2 for text encoders].")
@click.option("--forward-batch", type=click.IntRange(1, 4096), default=4, show_default=True,
              help="--method forward: synthetic samples (timesteps over [0,1], text scales, guidance values).")
@click.option("--forward-tokens", type=click.IntRange(1, 1 << 20), default=256, show_default=True,
              help="--method forward: latent tokens per sample.")
@click.option("--forward-text-tokens", type=click.IntRange(1, 1 << 20), default=128, show_default=True,
              help="--method forward: text tokens per sample.")
@click.option("--forward-micro-batch", type=click.IntRange(1, 4096), default=None,
              help="--method forward: samples run through the model at once; every micro-batch passes a layer "
                   "while its weight is loaded (read once), so this bounds the activations "
                   "[default: as many as fit in 2048 tokens, at most the batch].")
@click.option("--forward-threads", type=click.IntRange(1, 256), default=2, show_default=True,
              help="--method forward: torch threads for the pass (fixed: the same bytes whatever --jobs is).")
@click.option("--forward-conditioning", type=click.Choice(("weight-only", "fp8")), default="weight-only",
              show_default=True,
              help="--method forward: layers that read one vector per sample (timestep/guidance/pooled embedders, "
                   "AdaLN modulation) stay weight-only (at most a quarter of the layers; those that follow the "
                   "sampling step's time first), or get FP8 scales too.")
@click.option("--assume-input-rms", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="--method forward: layers the forward pass cannot reach and whose bound needs an assumption "
                   "about the model's inputs get that bound with inputs of rms <= R, instead of staying "
                   "weight-only [default: no assumption].")
@click.option("--spool/--no-spool", default=True, show_default=True,
              help="A pipe or zstd input that the forward pass must read by name is first written, decompressed, "
                   "to a temporary file (beside OUT, or in $TMPDIR), removed when the run ends; --no-spool: the "
                   "forward pass does not run on it and each layer gets the bound instead (auto: the bound method).")
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False), default=None,
              help="Stats file (fp8stream.record output, or plain per-layer scales); implies --method stats.")
@click.option("--map", "map_path", type=click.Path(dir_okay=False), default=None,
              help="--method stats: name pairs 'stats_name checkpoint_layer' (or a JSON object), tried first.")
@click.option("--stats-margin", type=click.FloatRange(1.0, 1e6), default=None,
              help="--method stats: scale = MARGIN x the recorded amax, capped by the hard bound where it is a "
                   "proof [default: 2 with --rule max, 1 with percentile/mse].")
@click.option("--fallback", type=click.Choice(["none", "simulate"]), default="none", show_default=True,
              help="--method stats: layers without stats get simulated scales instead of an error.")
@click.option("--factor", type=click.FloatRange(0.0, None, min_open=True), default=0.5, show_default=True,
              help="--method heuristic: input_scale = weight_scale x FACTOR.")
@click.option("--rule", type=click.Choice(RULES), default="max", show_default=True,
              help="How samples become a scale: max, percentile (--percentile) or mse search.")
@click.option("--percentile", type=click.FloatRange(50.0, 100.0), default=99.99, show_default=True,
              help="Percentile of |activation| for --rule percentile.")
@click.option("--samples", type=click.IntRange(1, 65536), default=64, show_default=True,
              help="Synthetic input rows per layer.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed: same seed, input and device give the same bytes.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where calibration maths runs; auto = CUDA when available.")
@click.option("--overwrite-scales", is_flag=True, help="Replace every existing input scale, real ones too.")
@click.option("--keep-weight-only", is_flag=True,
              help="Keep full_precision_matrix_mult on layers that have it (scales added, unused by ComfyUI).")
@click.option("--target", type=click.Choice(["auto", "comfy", "legacy"]), default="auto", show_default=True,
              help="Flavour written: auto keeps the file's (comfy for plain fp8); comfy converts legacy scaled_fp8; "
                   "legacy adds scaled_fp8 keys to plain fp8.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Calibrate only layers whose name matches (repeatable; prefix-free names match too).")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Keep matching layers weight-only (full_precision_matrix_mult) instead of calibrating them.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
              help="Exclude what the reference recipes keep in high precision: embedders, final projections, "
                   "first/last blocks of video DiTs. auto: from the key names.")
@click.option("--exclude-untouched", is_flag=True,
              help="Leave excluded layers exactly as they were (else they are flagged weight-only).")
@click.option("--force", "-f", is_flag=True, help="Replace OUT if it exists.")
@click.option("--dry-run", is_flag=True, help="Plan and report; write nothing.")
@click.option("--verify", is_flag=True,
              help="Hash every tensor while reading IN, re-read OUT before it replaces anything and compare "
                   "(passthrough tensors must be identical).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON line per input file on stdout (stderr when OUT is '-') instead of the table, which "
                   "always goes to stderr so that stdout stays free for the checkpoint and for pipes.")
@click.option("--verbose", is_flag=True,
              help="The table gives a line per layer (shape, scale, what it rests on) instead of one per reason.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False), help="Append the report to FILE.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@click.option("--zstd", "zstd", is_flag=True,
              help="Compress stdout ('-') or the --out-dir outputs with zstd (OUT named *.zst is always compressed; "
                   "compressed input is detected by itself).")
@click.option("--zstd-level", type=int, default=3, show_default=True, help="zstd compression level (1-22).")
@click.option("--zstd-threads", type=click.IntRange(0, 64), default=None,
              help="zstd compression workers; 0: in the calling thread [default: up to 4 that fit the memory].")
@click.option("--keep-going", is_flag=True, help="Batch: go on after a file fails.")
@click.option("--jobs", "-j", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Batch: files calibrated at once, in separate processes, within --max-memory.")
@click.option("--max-memory", help="Memory budget, e.g. 4G: bounds --jobs and zstd [default: available memory].")
@click.option("--storage-options", "storage_json",
              help="JSON object for fsspec when IN or OUT is a URL (s3://...): endpoint_url, profile, anon... "
                   "(docs/remote.md).")
def calibrate(paths: tuple[str, ...], out_dir: str | None, method: str, sim_mode: str, margin: float,
              forward_margin: float | None, forward_batch: int, forward_tokens: int, forward_text_tokens: int,
              forward_micro_batch: int | None, forward_threads: int, forward_conditioning: str,
              assume_input_rms: float | None, spool: bool, stats_path: str | None, map_path: str | None,
              stats_margin: float | None, fallback: str, factor: float, rule: str, percentile: float, samples: int,
              seed: int, device: str, overwrite_scales: bool, keep_weight_only: bool, target: str,
              include: tuple[str, ...], exclude: tuple[str, ...], preset: str | None, exclude_untouched: bool,
              force: bool, dry_run: bool, verify: bool, as_json: bool, verbose: bool, report_file: str | None,
              progress: bool | None, zstd: bool, zstd_level: int, zstd_threads: int | None, keep_going: bool, jobs: int,
              max_memory: str | None, storage_json: str | None) -> None:
    """Calibrate IN and write the result to OUT, or several INs (paths or globs) into --out-dir.

    '-' reads stdin or writes stdout (one pass, same memory bound as files); zstd input is
    detected by itself, and an OUT ending in .zst (or --zstd) is compressed.

    Every FP8 linear layer (ComfyUI mixed precision, legacy scaled_fp8 or plain float8_e4m3fn)
    gets an F32 activation scale; all other tensors pass through byte for byte. OUT appears only
    when complete. Placeholder scales and those of weight-only layers are replaced; real ones kept.

    The default --method auto runs a synthetic forward pass through the checkpoint's own weights
    (every family of the README's table; a pipe or zstd input is spooled to a temporary file),
    else the bound of --method simulate where it is a proof; the report says which. A family
    neither knows: every layer weight-only (no guess), exit code 5.
    """
    method_given = click.get_current_context().get_parameter_source("method") != click.core.ParameterSource.DEFAULT
    if stats_path and not method_given:
        method = "stats"  # --stats FILE alone means: use it
    if stats_path and method != "stats":
        raise click.UsageError("--stats is used only with --method stats")

    def body() -> int:
        configure_storage(parse_storage_options(storage_json))
        budget = memory_budget(max_memory) if max_memory else None
        inputs, output, batch = _resolve_paths(paths, out_dir, dry_run)
        compress = zstd if batch else bool(output) and (is_zstd_path(output) or (zstd and output == "-"))
        if output and not batch:
            check_output_name(output, zstd, compress)
        # zstd may take 128 MB by default; with --max-memory, what the budget leaves beside the base.
        zstd_budget = budget - BASE_MEMORY if budget else DEFAULT_COMPRESSION_BUDGET
        zstd_settings = _zstd_settings(zstd_level, zstd_threads, zstd_budget) if compress else None
        settings = CalibrationSettings(method=method, rule=rule, percentile=percentile, samples=samples,
                                       seed=seed, device=resolve_device(device), sim_mode=sim_mode, margin=margin,
                                       factor=factor, stats=stats_path, map=map_path, stats_margin=stats_margin,
                                       fallback=None if fallback == "none" else fallback,
                                       forward_margin=forward_margin, forward_batch=forward_batch,
                                       forward_tokens=forward_tokens, forward_text_tokens=forward_text_tokens,
                                       forward_threads=forward_threads, forward_micro_batch=forward_micro_batch,
                                       forward_conditioning=forward_conditioning, assume_input_rms=assume_input_rms,
                                       spool=spool)
        template = RewriteOptions(
            input=inputs[0], output=output, settings=settings, overwrite_scales=overwrite_scales,
            keep_weight_only=keep_weight_only, target=target, include=include, exclude=exclude, preset=preset,
            exclude_untouched=exclude_untouched, force=force, dry_run=dry_run, verify=verify,
            progress=sys.stderr.isatty() if progress is None else progress, zstd=zstd_settings)
        return _run(template, inputs, out_dir if batch else None, compress, BatchSettings(keep_going, jobs, budget),
                    ReportOptions(as_json, verbose, report_file))

    code = run_guarded(body)
    if code:
        sys.exit(code)


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
