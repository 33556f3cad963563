"""`fp8stream check FILE`: run the model on the synthetic inputs as ComfyUI would run the file,
beside full precision and dynamic FP8, and say what FP8 costs, per layer and end to end.

The pass is the default calibration's (its inputs, micro-batches, one weight live at a time;
methods/forward/comparison.py), the file is opened as `calibrate` opens it (a file, shards, '-',
zstd, a URL; a stream spooled to a temporary file). torch is imported by the run, not by --help.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from typing import Any

import click

from fp8stream.commands.common import EXIT_CODES, append_report, run_guarded
from fp8stream.commands.flags import REPORT, STORAGE_OPTIONS, SectionedCommand, options
from fp8stream.errors import BelowMinSqnr, NothingToCalibrateError, NotRunnable, UsageError
from fp8stream.methods.settings import CalibrationSettings, resolve_device
from fp8stream.options import COMMON, PASS, Flag, flags_of, values_of
from fp8stream.remote import configure as configure_storage, parse_storage_options
from fp8stream.rewrite import RewriteOptions

# The pass's options are calibrate's (one declaration each): check runs the inputs the default
# calibration runs unless told otherwise.
PASS_FLAGS = ("device", "seed", "forward_batch", "forward_tokens", "forward_text_tokens", "forward_micro_batch",
              "forward_threads")
OWN_FLAGS = (
    Flag(("--json",), COMMON, "One JSON object on stdout with every figure instead of the table.", type="bool",
         dest="as_json"),
    Flag(("--verbose",), COMMON, "The table lists every FP8 layer, not only the worst.", type="bool"),
    Flag(("--min-sqnr",), COMMON, "Exit 6 when the end-to-end SQNR of the file as ComfyUI runs it is below DB "
         "(for scripts).", type="float", metavar="DB"),
)


# calibrate's words for the two that speak of calibration and bytes; check gives figures
CHECK_HELP = {"device": "Where the forward pass runs; auto = CUDA when available.",
              "seed": "Seed of the synthetic inputs: the same seed, file and device give the same figures."}


def _flags() -> tuple[Flag, ...]:
    calibration = {f.name: f for f in flags_of(CalibrationSettings)}
    progress = next(f for f in flags_of(RewriteOptions) if f.name == "progress")
    device, seed = (dataclasses.replace(calibration[n], help=CHECK_HELP[n]) for n in ("device", "seed"))
    passes = (dataclasses.replace(calibration[name], section=PASS) for name in PASS_FLAGS[2:])
    return (device, *OWN_FLAGS, progress, REPORT, seed, *passes, STORAGE_OPTIONS)


FLAGS = _flags()


@click.command(cls=SectionedCommand, epilog=EXIT_CODES)
@click.argument("path", metavar="FILE", type=click.Path(allow_dash=True))
@options(FLAGS)
def check(path: str, **params: Any) -> None:
    """Run the model in FILE as ComfyUI would and predict its FP8 quality, without data.

    This is the command that runs the model: `inspect` reads the header only, `verify` compares
    bytes. The family's forward pass runs on the default calibration's synthetic inputs, one
    weight live at a time, in three streams in step: full precision, the file as ComfyUI runs it
    (each FP8 layer's input quantized with its input_scale, 1.0 where the file has none;
    weight-only layers in full precision) and dynamic per-tensor FP8. It reports each layer's
    input range against its scale, the share clipped and the output's SQNR, the model output's
    SQNR end to end per sampling time, and a verdict. FILE: a file, a sharded folder, '-' or a URL."""

    def body() -> int:
        if params["min_sqnr"] is not None and not math.isfinite(params["min_sqnr"]):
            # nan compares false with every SQNR (never exit 6), inf always true; neither is valid JSON
            raise UsageError(f"--min-sqnr {params['min_sqnr']}: give a finite number of dB")
        configure_storage(parse_storage_options(params["storage_json"]))
        values = {k: v for k, v in values_of(CalibrationSettings, params).items() if k in PASS_FLAGS}
        values["device"] = resolve_device(params["device"])
        settings = CalibrationSettings("forward", **values)
        progress = sys.stderr.isatty() if params["progress"] is None else params["progress"]
        report = check_file(path, settings, progress, params["min_sqnr"])
        text = json.dumps(report.to_doc()) if params["as_json"] else _render(report, params["verbose"])
        if params["report_file"]:
            append_report(params["report_file"], text)
        else:
            click.echo(text, err=not params["as_json"])
        if report.status == "not-run":
            raise NotRunnable(f"{path}: {report.reason}: nothing measured (exit 5)")
        if report.status == "below-min-sqnr":
            raise BelowMinSqnr(f"{path}: end-to-end SQNR {report.comfy_overall_db:.1f} dB as ComfyUI runs it is "
                               f"below --min-sqnr {params['min_sqnr']:g}")
        return 0

    run_guarded(body)


def _render(report, verbose: bool) -> str:
    from fp8stream.check_report import render

    return render(report, verbose)


def check_file(path: str, settings: CalibrationSettings, progress: bool, min_sqnr: float | None):
    """The report on one model (check_report.CheckReport): opened as calibrate opens it, a stream
    spooled; the three streams run where the family has a forward pass."""
    from fp8stream.check_report import build, file_only
    from fp8stream.formats.comfy_runtime import comfy_runs
    from fp8stream.io.storage import locate
    from fp8stream.methods.forward.forward_pass import PassSettings, prepare
    from fp8stream.pipeline.inputs import open_model
    from fp8stream.pipeline.spool import spooled
    from fp8stream.progress import PREPARING, phase

    with open_model(locate(path)) as model, contextlib.ExitStack() as opened:
        source = model.tensor_source()
        if source is None:  # a pipe or a zstd stream: the pass reads by name
            model = opened.enter_context(spooled(model, None, progress))
            source = model.tensor_source()
        opened.enter_context(source)
        header = model.whole
        runs = comfy_runs(header, source)
        if not runs:
            raise NothingToCalibrateError(f"{path}: no FP8 linear layer to check")
        with phase(PREPARING, progress):
            prepared = prepare(header)
        if prepared.reason is not None:
            family = prepared.detection.family if prepared.detection else None
            return file_only(path, family, prepared.reason, runs)
        from fp8stream.methods.forward.comparison import compare

        comparison = compare(source, prepared, runs, PassSettings.of(settings, progress))
        return build(path, runs, comparison, min_sqnr)
