"""Many checkpoints in one command: output names, memory budget, parallel jobs, exit code.

Every output name is decided, and clashes refused, before any file is touched. With `--jobs N`
files run in separate processes (torch and the GIL make threads useless), started only while
the sum of their memory estimates, plus this process, fits the budget.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import re
import signal
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Callable

from fp8stream import interrupts
from fp8stream.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNSCALED,
    FP8StreamError,
    Interrupted,
    NothingToCalibrateError,
    UsageError,
)
from fp8stream.io.compression import strip_zstd_suffix
from fp8stream.memory import MB, available_memory, current_rss, estimate_terms, memory_estimate
from fp8stream.methods.forward.diffusers_import import lean_for_this_process
from fp8stream.options import BATCH, flag
from fp8stream.report import FileReport
from fp8stream.rewrite import RewriteOptions, calibrate_file

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class BatchItem:
    input: str
    output: str


def expand_inputs(patterns: list[str]) -> list[str]:
    """Paths as given; a pattern that names no file is expanded as a glob (sorted)."""
    paths: list[str] = []
    for pattern in patterns:
        if pattern == "-":
            raise UsageError("'-' (stdin) takes one input and one output, not --out-dir")
        if os.path.exists(pattern) or not _GLOB_CHARS.search(pattern):
            paths.append(pattern)
            continue
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise UsageError(f"{pattern}: matches no file")
        paths += matches
    return paths


def output_name(input_path: str, compress: bool) -> str:
    """The input's file name, `.zst` removed, plus `.zst` when the output is compressed."""
    name = strip_zstd_suffix(os.path.basename(input_path))
    return name + ".zst" if compress else name


def plan_outputs(inputs: list[str], out_dir: str, compress: bool) -> list[BatchItem]:
    """One output path per input in out_dir; refuse two inputs that would share one."""
    by_output: dict[str, list[str]] = {}
    items = []
    for path in inputs:
        output = os.path.join(out_dir, output_name(path, compress))
        by_output.setdefault(output, []).append(path)
        items.append(BatchItem(path, output))
    clashes = {out: ins for out, ins in by_output.items() if len(ins) > 1}
    if clashes:
        out, ins = next(iter(clashes.items()))
        more = f" (and {len(clashes) - 1} more names)" if len(clashes) > 1 else ""
        raise UsageError(f"{', '.join(ins)} would all be written to {out}{more}; rename or run them separately")
    return items


def calibrate_one(options: RewriteOptions) -> FileReport:
    """calibrate_file that never raises a user error: failures and skips become the report."""
    started = time.monotonic()
    try:
        return calibrate_file(options)
    except NothingToCalibrateError as e:
        return FileReport(options.input, None, status="skipped", error=str(e), exit_code=e.exit_code,
                          seconds=time.monotonic() - started)
    except Interrupted:
        raise
    except FP8StreamError as e:
        return FileReport(options.input, options.output, status="failed", error=str(e), exit_code=e.exit_code,
                          seconds=time.monotonic() - started)
    except MemoryError:
        return FileReport(options.input, options.output, status="failed", error="out of memory",
                          exit_code=EXIT_FAILURE, seconds=time.monotonic() - started)


def batch_exit_code(reports: list[FileReport]) -> int:
    """0: none failed (skipped files are not failures); 1: none succeeded; 4: some failed; 5: none
    failed, but some file was written with no layer scaled."""
    failed = sum(1 for r in reports if r.status in ("failed", "not-run"))
    if failed == 0:
        return EXIT_UNSCALED if any(r.status == "unscaled" for r in reports) else EXIT_OK
    return EXIT_FAILURE if failed == len(reports) else EXIT_PARTIAL


@dataclass
class BatchSettings:
    keep_going: bool = flag(False, "--keep-going", section=BATCH, type="bool",
                            help="Batch: go on after a file fails.")
    jobs: int = flag(1, "--jobs", "-j", section=BATCH, type="int", range=(1, 256),
                     help="Batch: files calibrated at once, in separate processes, within --max-memory.")
    # bytes; None: what the system has available. The command line gives a size (4G: memory_budget()).
    max_memory: int | None = flag(None, "--max-memory", section=BATCH,
                                  help="Memory budget, e.g. 4G: bounds --jobs and zstd [default: available memory].")


def run_batch(items: list[BatchItem], template: RewriteOptions, settings: BatchSettings,
              emit: Callable[[FileReport], None]) -> list[FileReport]:
    """Calibrate every item; `emit` gets each report as it finishes (completion order)."""
    options = [replace(template, input=item.input, output=item.output) for item in items]
    if settings.jobs <= 1 and settings.max_memory is None:
        return _run_serial(options, settings, emit)
    return _run_parallel(options, settings, emit)


def _not_run(option: RewriteOptions) -> FileReport:
    return FileReport(option.input, option.output, status="not-run", exit_code=EXIT_FAILURE,
                      error="not started: an earlier file failed (use --keep-going to go on)")


def _run_serial(options: list[RewriteOptions], settings: BatchSettings,
                emit: Callable[[FileReport], None]) -> list[FileReport]:
    reports: list[FileReport] = []
    for option in options:
        # Any earlier failure stops the batch, not only the last file's: after one failure the
        # rest are "not-run", and a "not-run" report must not let the next file start.
        if not settings.keep_going and any(r.status == "failed" for r in reports):
            report = _not_run(option)
        else:
            report = calibrate_one(option)
        reports.append(report)
        emit(report)
    return reports


def _worker(options: RewriteOptions, conn, threads: int) -> None:
    """A job's process: one file, its report sent back; SIGTERM cleans up like the CLI's."""
    signal.signal(signal.SIGTERM, interrupts.on_signal)
    interrupts.set_phase("running")
    lean_for_this_process()  # a job's process: diffusers serves its forward pass alone
    import torch

    from fp8stream.scales.fp8_maths import set_threads

    torch.set_num_threads(threads)
    set_threads(threads)  # the row sums take this job's share of the cores too
    try:
        conn.send(calibrate_one(options))
    except (Interrupted, KeyboardInterrupt):
        pass
    finally:
        conn.close()


def _over_budget(option: RewriteOptions, estimate: int) -> FileReport:
    return FileReport(option.input, option.output, status="failed", exit_code=EXIT_FAILURE,
                      error=f"needs about {estimate // MB} MB ({estimate_terms(option.settings)}), over --max-memory")


def _collect(receiver, process, option: RewriteOptions) -> FileReport:
    """A finished worker's report (or a failure if it died without one); its process reaped."""
    try:
        report = receiver.recv()
    except (EOFError, OSError):
        process.join()
        report = FileReport(option.input, option.output, status="failed", exit_code=EXIT_FAILURE,
                            error=f"worker process died (exit code {process.exitcode})")
    process.join()
    receiver.close()
    return report


def _run_parallel(options: list[RewriteOptions], settings: BatchSettings,
                  emit: Callable[[FileReport], None]) -> list[FileReport]:
    explicit_budget = settings.max_memory is not None
    budget = (settings.max_memory if explicit_budget else available_memory()) - current_rss()
    jobs = max(1, settings.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    pending = [(o, memory_estimate(o.input, o.zstd, o.settings)) for o in options]
    results: dict[int, FileReport] = {}
    running: dict[object, tuple[int, object, int]] = {}  # conn -> (index, process, estimate)
    in_use = 0
    stop = False
    order = list(range(len(pending)))
    try:
        while order or running:
            # Start what fits: in input order, never skipping ahead of a file that waits for room.
            while order and not stop and len(running) < jobs:
                index = order[0]
                option, estimate = pending[index]
                if estimate > budget and explicit_budget:
                    order.pop(0)
                    results[index] = _over_budget(option, estimate)
                    emit(results[index])
                    stop = not settings.keep_going
                    continue
                if running and in_use + estimate > budget:
                    break
                order.pop(0)
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_worker, args=(option, sender, threads), daemon=True)
                process.start()
                sender.close()
                running[receiver] = (index, process, estimate)
                in_use += estimate
            if stop and not running:
                break
            ready = wait(list(running) + [p.sentinel for _, p, _ in running.values()])
            for receiver in list(running):
                index, process, estimate = running[receiver]
                if receiver not in ready and process.sentinel not in ready:
                    continue
                report = _collect(receiver, process, options[index])
                del running[receiver]
                in_use -= estimate
                results[index] = report
                emit(report)
                if report.status == "failed" and not settings.keep_going:
                    stop = True
    finally:
        for _, process, _ in running.values():
            process.terminate()  # SIGTERM: the worker removes its temporary file
        for receiver, (_, process, _) in running.items():
            process.join(timeout=30)
            receiver.close()
    for index in order:
        results[index] = _not_run(options[index])
        emit(results[index])
    return [results[i] for i in range(len(options))]
