"""Where a whole run's time goes: fp8stream's command line with a timeline on stderr.

    python scripts/timeline.py [--torch-first] calibrate IN OUT [calibrate's options]

Each line `[t+  12.34s] > name` / `< name` marks a phase entered or left (seconds since this
script started); at exit, `[acc] name: S s in N calls` sums the time spent in a call site over
every thread (the forward pass's reading threads, the copy's tap, the weight checks), so work
that runs beside other work still shows. `--torch-first` imports torch before the run, to see
its import apart (the run imports it when it creates the forward method). Each module is
instrumented when the run imports it, so the run imports what it would (simulate no torch).
docs/speed.md's timelines were taken this way. The functions are wrapped by name: one that is
renamed is reported on stderr, not silently left out. Not part of the package; it changes
nothing the run writes.
"""

from __future__ import annotations

import atexit
import collections
import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import time

START = time.monotonic()

PHASES = [  # (module, function): marked on entry and exit
    ("fp8stream.rewrite", "_plan"),
    ("fp8stream.rewrite", "_prepared"),
    ("fp8stream.rewrite", "_calibrate"),
    ("fp8stream.methods.forward.diffusers_import", "import_diffusers"),
    ("fp8stream.methods.forward.forward_pass", "prepare"),
    ("fp8stream.methods.forward.forward_pass", "run"),
    ("fp8stream.methods.forward.conditioning", "from_shapes"),
    ("fp8stream.pipeline.spool", "spooled"),
    ("fp8stream.pipeline.run", "stream_model"),
    ("fp8stream.pipeline.run", "_place_model"),
    ("fp8stream.pipeline.placed_run", "place_file"),
    ("fp8stream.pipeline.run", "finish_files"),
]
SUMMED = [  # (module, class or None, function, label): time summed over calls and threads
    ("fp8stream.pipeline.placed_run", "Placer", "read", "tap: Placer.read (reading threads)"),
    ("fp8stream.pipeline.placed_run", "Placer", "held", "tap: Placer.held (the model's thread)"),
    ("fp8stream.pipeline.weight_checks", "WeightChecks", "observe", "WeightChecks.observe"),
    ("fp8stream.pipeline.loop", "Feed", "show", "Feed.show (checks and row sums)"),
    ("fp8stream.methods.forward.prefetch", "Prefetcher", "_load", "Prefetcher._load (reading threads)"),
    ("fp8stream.methods.forward.prefetch", "Prefetcher", "take", "Prefetcher.take (the model waits)"),
    ("fp8stream.io.source", "TensorSource", "read_rows", "TensorSource.read_rows"),
    ("fp8stream.methods.forward.engine", "StreamingModel", "gather", "StreamingModel.gather (the model's thread)"),
    ("fp8stream.pipeline.head_start", "HeadStart", "join", "HeadStart.join (waits for the head start)"),
]

_summed_seconds: dict[str, float] = collections.defaultdict(float)
_calls: collections.Counter = collections.Counter()
_lock = threading.Lock()


def mark(what: str) -> None:
    print(f"[t+{time.monotonic() - START:7.2f}s] {what}", file=sys.stderr, flush=True)


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Applies each module's patches right after the module runs, when the run imports it: the
    timeline imports nothing early (simulate stays torch-free, diffusers' lean import stays lean)."""

    def __init__(self, patches: dict[str, list]) -> None:
        self.patches = patches

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.patches:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def run_then_patch(module) -> None:
            run_module(module)
            for patch in self.patches[fullname]:
                patch(module)
        spec.loader.exec_module = run_then_patch  # this spec's own loader
        return spec


def _wrap(module, cls: str | None, name: str, make) -> None:
    owner = getattr(module, cls, None) if cls else module
    original = getattr(owner, name, None) if owner is not None else None
    if original is None:
        mark(f"{module.__name__}.{cls + '.' if cls else ''}{name} not found: not timed")
        return
    setattr(owner, name, functools.wraps(original)(make(original)))


def _marked(label: str):
    def make(original):
        def marked(*args, **kwargs):
            mark(f"> {label}")
            try:
                return original(*args, **kwargs)
            finally:
                mark(f"< {label}")
        return marked
    return make


def _summed(label: str):
    def make(original):
        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with _lock:
                    _summed_seconds[label] += time.perf_counter() - began
                    _calls[label] += 1
        return timed
    return make


def _patch(cls: str | None, name: str, make):
    return lambda module: _wrap(module, cls, name, make)


def instrument() -> None:
    """Every PHASES and SUMMED function wrapped: now where its module is imported, else when the
    run imports it."""
    patches: dict[str, list] = collections.defaultdict(list)
    for module, name in PHASES:
        patches[module].append(_patch(None, name, _marked(f"{module.rsplit('.', 1)[-1]}.{name}")))
    for module, cls, name, label in SUMMED:
        patches[module].append(_patch(cls, name, _summed(label)))
    for module in [m for m in patches if m in sys.modules]:
        for patch in patches.pop(module):
            patch(sys.modules[module])
    sys.meta_path.insert(0, _PatchAfterImport(patches))


def report() -> None:
    for label, seconds in _summed_seconds.items():
        print(f"[acc] {label}: {seconds:.2f} s in {_calls[label]} calls", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    torch_first = "--torch-first" in argv[:1]
    args = argv[1:] if torch_first else argv
    mark("start")
    import fp8stream.cli

    mark("fp8stream.cli imported")
    if torch_first:
        import torch  # noqa: F401

        mark("torch imported")
    instrument()
    atexit.register(report)
    mark("instrumented")
    sys.argv = ["fp8stream", *args]
    try:
        fp8stream.cli.main()
    finally:
        mark("end")


if __name__ == "__main__":
    main(sys.argv[1:])
