"""Drive the zoo on Ray: one task per checkpoint with the resources it needs, bounded retries
of tasks whose worker or node died, one report per file as each finishes.

Nothing here schedules: Ray places the tasks (CPU, memory, GPU slots), restarts them when a
worker dies (`max_retries`) and never retries a task that returned, which is how a file that
fails on its own is reported once instead of retried.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from fp8stream.errors import EXIT_FAILURE, UsageError
from fp8stream.report import FileReport
from fp8stream.rewrite import RewriteOptions
from fp8stream.zoo.console import CONSOLE
from fp8stream.zoo.identity import is_done, output_metadata
from fp8stream.zoo.listing import ZooItem

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class ZooSettings:
    address: str | None = None  # join this cluster; None: start a local one on 127.0.0.1
    workers: int = 2  # CPUs of the local cluster (one task per CPU)
    gpus: float = 0.0  # GPU slot per task
    retries: int = 2  # re-runs of a task whose worker or node died
    ray_log: str = "fp8stream-zoo-ray.log"
    storage: dict[str, Any] = field(default_factory=dict)
    options_digest: str = ""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("fp8stream zoo needs Ray: pip install 'fp8stream[ray]'") from None
    return ray


def start_ray(settings: ZooSettings) -> Any:
    """Join `address` or start a local cluster; Ray's own messages go to settings.ray_log."""
    ray = _import_ray()
    handler = logging.FileHandler(settings.ray_log)
    for name in ("ray", "ray.data", "ray.tune"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).propagate = False
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
    try:
        if settings.address:
            # Ray reads its token (RAY_AUTH_TOKEN) and TLS settings from the environment itself.
            ray.init(address=settings.address, runtime_env={"py_modules": [PACKAGE_DIR]}, **common)
        else:
            path = os.pathsep.join(filter(None, [os.path.dirname(PACKAGE_DIR), os.environ.get("PYTHONPATH")]))
            ray.init(num_cpus=settings.workers, num_gpus=0 if not settings.gpus else None,
                     _node_ip_address="127.0.0.1", include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}}, **common)
        return ray
    except Exception as e:
        raise UsageError(f"Ray: cannot {'join ' + settings.address if settings.address else 'start'} "
                         f"({(str(e) or type(e).__name__).splitlines()[0]}; see {settings.ray_log})") from None


def _largest_node_memory(ray: Any) -> float:
    return max((n.get("Resources", {}).get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)


def _failed(item: ZooItem, error: str) -> FileReport:
    return FileReport(item.input, item.output, status="failed", error=error, exit_code=EXIT_FAILURE)


def run_zoo(items: list[ZooItem], template: RewriteOptions, settings: ZooSettings,
            emit: Callable[[FileReport], None]) -> list[FileReport]:
    """Every item to a report: probed-failed and up-to-date ones at once, the rest through Ray."""
    reports: list[FileReport] = []
    todo: list[ZooItem] = []
    for item in items:
        if item.error is not None:
            reports.append(_failed(item, item.error))
        elif item.identity is not None and is_done(item.record_url, item.identity, settings.options_digest):
            reports.append(FileReport(item.input, item.output, status="skipped",
                                      notes=["up to date: the output records this input and these options"]))
        else:
            todo.append(item)
    for number, report in enumerate(reports, 1):
        _progress(number, len(items), report)
        emit(report)
    if not todo:
        return reports
    try:
        open(settings.ray_log, "a").close()
    except OSError as e:
        raise UsageError(f"--ray-log {settings.ray_log}: cannot write ({e.strerror})") from None
    with CONSOLE.ray_output_to(settings.ray_log):
        _run_on_ray(todo, template, settings, reports, len(items), emit)
    return reports


def _run_on_ray(todo: list[ZooItem], template: RewriteOptions, settings: ZooSettings, reports: list[FileReport],
                total: int, emit: Callable[[FileReport], None]) -> None:
    import dataclasses
    ray = start_ray(settings)
    try:
        task = ray.remote(_run_one_task)
        room = _largest_node_memory(ray)
        pending: dict[Any, ZooItem] = {}
        for item in todo:
            if room and item.memory > room:
                reports.append(_failed(item, f"needs {item.memory / 1e9:.2f} GB, "
                                             f"the largest node has {room / 1e9:.2f} GB"))
                _progress(len(reports), total, reports[-1])
                emit(reports[-1])
                continue
            options = dataclasses.replace(template, input=item.input, output=item.output)
            meta = output_metadata(item.identity, settings.options_digest) if item.identity else None
            ref = task.options(num_cpus=1, num_gpus=settings.gpus, memory=item.memory, max_retries=settings.retries,
                               retry_exceptions=False).remote(options, item.pins, item.record_url, meta,
                                                              settings.storage)
            pending[ref] = item
        _collect(ray, pending, settings, reports, total, emit)
    finally:
        ray.shutdown()


def _collect(ray: Any, pending: dict[Any, ZooItem], settings: ZooSettings, reports: list[FileReport],
             total: int, emit: Callable[[FileReport], None]) -> None:
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        item = pending.pop(done[0])
        try:
            report = ray.get(done[0])
        except ray.exceptions.RayError as e:  # the worker or node died more than `retries` times
            what = type(e).__name__
            report = _failed(item, f"worker died {settings.retries + 1} times ({what}); see {settings.ray_log}")
        reports.append(report)
        _progress(len(reports), total, report)
        emit(report)


def _progress(done: int, total: int, report: FileReport) -> None:
    detail = f": {report.error}" if report.error else ""
    print(f"zoo: [{done}/{total}] {report.status} {report.input} ({report.seconds:.1f} s){detail}",
          file=CONSOLE.err, flush=True)


def _run_one_task(options: RewriteOptions, pins: dict[str, str], record_url: str,
                  metadata: dict[str, str] | None, storage: dict[str, Any]) -> FileReport:
    from fp8stream.zoo.task import run_one  # imported in the worker, where torch is loaded once
    return run_one(options, pins, record_url, metadata, storage)


def summary(reports: list[FileReport], wall: float, settings: ZooSettings) -> dict[str, Any]:
    count = {s: sum(1 for r in reports if r.status == s) for s in ("ok", "skipped", "failed")}
    return {"summary": {"files": len(reports), **count, "wall_seconds": round(wall, 3),
                        "workers": settings.workers if not settings.address else None,
                        "file_seconds": round(sum(r.seconds for r in reports if r.status == "ok"), 3)}}


def wall_clock() -> float:
    return time.monotonic()
