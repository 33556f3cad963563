"""`fp8stream zoo`: calibrate many checkpoints on a Ray cluster, from and to object storage."""

from __future__ import annotations

import json
import sys

import click

from fp8stream.batch import batch_exit_code
from fp8stream.commands.common import EXIT_CODES, append_report, run_guarded
from fp8stream.commands.flags import REPORT, STORAGE_OPTIONS, SectionedCommand, options
from fp8stream.errors import UsageError
from fp8stream.methods.registry import METHOD, methods_without_side_file
from fp8stream.methods.settings import CalibrationSettings, resolve_device
from fp8stream.options import CLUSTER, COMMON, Flag, flags_of
from fp8stream.remote import configure, parse_storage_options
from fp8stream.rewrite import RewriteOptions

# zoo's own options; the others are calibrate's declarations (the same Flag objects).
OWN_FLAGS = (
    Flag(("--pairs",), COMMON, "File of 'IN OUT' lines (instead of prefixes).", type="file", dest="pairs_file"),
    Flag(("--address",), CLUSTER, "Join this Ray cluster (e.g. ray://head:10001 or auto); default: start a local one."),
    Flag(("--workers",), CLUSTER, "Local cluster only: CPUs, so tasks at once.", default=2, type="int",
         range=(1, 1024)),
    Flag(("--gpus",), CLUSTER, "GPU slot per task.", default=0.0, type="float", range=(0, 8)),
    Flag(("--retries",), CLUSTER, "Re-runs of a task whose worker or node died (a failing file is not retried).",
         default=2, type="int", range=(0, 20)),
    Flag(("--ray-log",), CLUSTER, "Where Ray's own messages go.", default="fp8stream-zoo-ray.log"),
)
_SETTINGS = {f.name: f for f in (*flags_of(CalibrationSettings), *flags_of(RewriteOptions))}
FLAGS = (_SETTINGS["force"], _SETTINGS["device"], METHOD, _SETTINGS["seed"], REPORT, OWN_FLAGS[0],
         _SETTINGS["preset"], _SETTINGS["sim_mode"], _SETTINGS["margin"], _SETTINGS["samples"], STORAGE_OPTIONS,
         *OWN_FLAGS[1:])


@click.command(cls=SectionedCommand, epilog=EXIT_CODES)
@click.argument("prefixes", metavar="[SRC_PREFIX DST_PREFIX]", nargs=-1)
@options(FLAGS, narrowed={"method": methods_without_side_file()})
def zoo(prefixes: tuple[str, ...], pairs_file: str | None, method: str, sim_mode: str, margin: float, samples: int,
        seed: int, device: str, preset: str | None, force: bool, address: str | None, workers: int, gpus: float,
        retries: int, storage_json: str | None, ray_log: str, report_file: str | None) -> None:
    """Calibrate every checkpoint of a listing, one Ray task each, streaming from and to fsspec
    URLs (s3://, gs://, hf://, file://) or local paths.

    The listing is --pairs FILE ('IN OUT' per line) or SRC_PREFIX DST_PREFIX (every
    *.safetensors[.zst] under SRC, written at the same relative path under DST; a folder
    holding a *.safetensors.index.json is one sharded model, written as a folder, index last). Outputs whose
    metadata records the same input (size, ETag or version, header digest) and options are
    skipped, so a re-run after a crash redoes only what is missing. One JSON line per file on
    stdout (the batch report's fields), then a summary line; progress on stderr.

    --method takes the methods that need no side file: simulate reads each input once;
    auto and forward run the forward pass, which reads a URL input twice (docs/remote.md).
    """
    def body() -> int:
        from fp8stream.zoo import driver, listing
        storage = parse_storage_options(storage_json)
        configure(storage)
        pairs = _listing(prefixes, pairs_file, listing)
        settings, digest = zoo_settings(method, sim_mode, margin, samples, seed, resolve_device(device, method), preset)
        template = RewriteOptions(input=pairs[0][0], output=pairs[0][1], settings=settings, preset=preset,
                                  force=force, progress=False)
        items = [listing.ZooItem(i, o) for i, o in pairs]
        for item in items:
            listing.probe(item, None, settings)
        zs = driver.ZooSettings(address=address, workers=workers, gpus=gpus, retries=retries, ray_log=ray_log,
                                storage=storage, options_digest=digest)
        started = driver.wall_clock()
        reports = driver.run_zoo(items, template, zs, lambda r: _emit(r.to_json(), report_file))
        _emit(json.dumps(driver.summary(reports, driver.wall_clock() - started, zs)), report_file)
        return batch_exit_code(reports)

    code = run_guarded(body)
    if code:
        sys.exit(code)


def zoo_settings(method: str, sim_mode: str, margin: float, samples: int, seed: int, device: str,
                 preset: str | None) -> tuple[CalibrationSettings, str]:
    """The calibration settings and the digest of every option that changes an output's bytes
    (recorded on each output, compared to skip up-to-date ones)."""
    from fp8stream.zoo.identity import options_digest
    settings = CalibrationSettings(method=method, samples=samples, seed=seed, device=device, sim_mode=sim_mode,
                                   margin=margin)
    return settings, options_digest({"settings": settings.describe(), "preset": preset})


def _listing(prefixes: tuple[str, ...], pairs_file: str | None, listing: object) -> list[tuple[str, str]]:
    if pairs_file and prefixes:
        raise UsageError("give --pairs FILE or SRC_PREFIX DST_PREFIX, not both")
    if pairs_file:
        pairs = listing.read_pairs(pairs_file)  # type: ignore[attr-defined]
    elif len(prefixes) == 2:
        pairs = listing.pairs_from_prefixes(*prefixes)  # type: ignore[attr-defined]
    else:
        raise UsageError("give --pairs FILE, or SRC_PREFIX DST_PREFIX")
    if not pairs:
        raise UsageError("the listing is empty: nothing to calibrate")
    listing.check_pairs(pairs)  # type: ignore[attr-defined]
    return pairs


def _emit(text: str, report_file: str | None) -> None:
    if report_file:
        append_report(report_file, text)
    else:
        from fp8stream.zoo.console import (
            CONSOLE,  # the real stdout while Ray's output goes to its log
        )
        click.echo(text, file=CONSOLE.out)

