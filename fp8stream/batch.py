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
import stat
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Callable

from fp8stream.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    FP8StreamError,
    Interrupted,
    NothingToCalibrateError,
    UsageError,
)
from fp8stream.io.compression import MAX_WINDOW_BYTES, ZstdSettings, compression_memory, strip_zstd_suffix
from fp8stream.io.reader import open_input, read_input_header
from fp8stream.report import FileReport
from fp8stream.rewrite import RewriteOptions, calibrate_file

MB = 1 << 20
BASE_MEMORY = 300 * MB  # interpreter, torch, buffers: the "+ 300 MB" of the bound
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


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4G', '512M', '1.5g', '300000000' to bytes (binary multiples)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"--max-memory: cannot read {text!r} (examples: 4G, 512M)")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024**power)


def memory_budget(text: str) -> int:
    """--max-memory in bytes; a budget below what every run needs (the 300 MB base) is a usage
    error, refused before anything starts."""
    budget = parse_size(text)
    if budget < BASE_MEMORY:
        raise UsageError(f"--max-memory {text}: below the {BASE_MEMORY // MB} MB that any run needs "
                         f"(interpreter, torch, buffers); give at least {BASE_MEMORY // MB}M")
    return budget


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, else physical memory: the default budget."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def memory_estimate(path: str, zstd: ZstdSettings | None) -> int:
    """What one file's run may take: 2 x largest tensor + 300 MB, plus zstd's windows and
    contexts. From the header alone; an unreadable header gets the base (it fails fast). A pipe
    (FIFO, /dev/fd/N) is not read twice: it gets the base and the largest zstd window."""
    extra = compression_memory(zstd.level, zstd.threads) if zstd else 0
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return BASE_MEMORY + MAX_WINDOW_BYTES + extra
        source = open_input(path)
    except OSError:
        return BASE_MEMORY + extra
    except FP8StreamError:
        return BASE_MEMORY + extra
    try:
        header = read_input_header(source)
        window = getattr(source.stream, "window_size", 0) if source.compressed else 0
    except FP8StreamError:
        return BASE_MEMORY + extra
    finally:
        source.close()
    largest = max((t.nbytes for t in header.tensors), default=0)
    return 2 * largest + BASE_MEMORY + window + extra


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
    """0: none failed (skipped files are not failures); 1: none succeeded; 4: some failed."""
    failed = sum(1 for r in reports if r.status in ("failed", "not-run"))
    if failed == 0:
        return EXIT_OK
    return EXIT_FAILURE if failed == len(reports) else EXIT_PARTIAL


@dataclass
class BatchSettings:
    keep_going: bool = False
    jobs: int = 1
    max_memory: int | None = None  # None: what the system has available


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


def _current_rss() -> int:
    """This process's resident memory now (statm), or its peak where statm is missing; the
    resource module is POSIX-only, so it is imported here (Windows has neither: 0)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        try:
            import resource
        except ImportError:
            return 0
        ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024  # bytes on macOS, KB on Linux


def _worker(options: RewriteOptions, conn, threads: int) -> None:
    """A job's process: one file, its report sent back; SIGTERM cleans up like the CLI's."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    import torch

    torch.set_num_threads(threads)
    try:
        conn.send(calibrate_one(options))
    except (Interrupted, KeyboardInterrupt):
        pass
    finally:
        conn.close()


def _run_parallel(options: list[RewriteOptions], settings: BatchSettings,
                  emit: Callable[[FileReport], None]) -> list[FileReport]:
    explicit_budget = settings.max_memory is not None
    budget = (settings.max_memory if explicit_budget else available_memory()) - _current_rss()
    jobs = max(1, settings.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    pending = [(o, memory_estimate(o.input, o.zstd)) for o in options]
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
                    results[index] = FileReport(option.input, option.output, status="failed", exit_code=EXIT_FAILURE,
                                                error=f"needs about {estimate // MB} MB (2 x largest tensor + 300 MB"
                                                      f" + zstd), over --max-memory")
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
                try:
                    report = receiver.recv()
                except (EOFError, OSError):
                    process.join()
                    report = FileReport(options[index].input, options[index].output, status="failed",
                                        exit_code=EXIT_FAILURE,
                                        error=f"worker process died (exit code {process.exitcode})")
                process.join()
                receiver.close()
                del running[receiver]
                in_use -= estimate
                results[index] = report
                emit(report)
                if report.status == "failed" and not settings.keep_going:
                    stop = True
    finally:
        for receiver, (_, process, _) in running.items():
            process.terminate()  # SIGTERM: the worker removes its temporary file
        for receiver, (_, process, _) in running.items():
            process.join(timeout=30)
            receiver.close()
    for index in order:
        results[index] = _not_run(options[index])
        emit(results[index])
    return [results[i] for i in range(len(options))]
