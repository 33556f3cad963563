"""Memory for a batch: the --max-memory budget, what the system has, what one file's run needs.

A run of the stream methods (simulate, stats, heuristic) needs a base (interpreter, torch,
buffers: 300 MB) plus twice its largest tensor plus zstd's windows. The forward pass (the
default) holds more: torch and diffusers with the model's code, one Linear's weight as float32,
its read-ahead window and the activations of the synthetic batch (`forward_memory`). `--jobs N`
starts a file only while the sum of the estimates fits the budget.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from typing import Sequence

from fp8stream.errors import FP8StreamError, UsageError
from fp8stream.io.compression import MAX_WINDOW_BYTES, ZstdSettings, compression_memory
from fp8stream.io.header import TensorInfo
from fp8stream.io.reader import open_input, read_input_header
from fp8stream.io.storage import locate
from fp8stream.methods.forward_settings import READ_AHEAD_BYTES
from fp8stream.methods.settings import CalibrationSettings

MB = 1 << 20
BASE_MEMORY = 300 * MB  # interpreter, torch, buffers: the "+ 300 MB" of the bound
# torch, diffusers (or transformers) and a family's model code imported, the model built on the
# meta device: measured 456 MiB for a tiny Flux run of the default on the CPU (imports alone:
# 401 MiB for Flux's, 410 for Qwen-Image/Wan/SD3's, 371 for T5/CLIP's; torch 2.13, diffusers 0.42)
FORWARD_BASE = 512 * MB
# on a GPU the host also holds the CUDA libraries and context; the issue-24 figures of the default
# on an H200 (host RSS 1.66 GB for Flux-dev, 2.29 GB for SD3.5-large) are what this covers
CUDA_HOST = 1024 * MB
FORWARD_METHODS = ("auto", "forward")  # auto runs the forward pass wherever it can
# widest activations live at once per token: a Linear's input, its output and one more (the MLP's
# activation, an attention/MLP concatenation); lock step keeps every micro-batch's between Linears
ACTIVATION_COPIES = 3
# calibrate's prediction (--predict, opt-in) runs two more streams in lock step with the
# pass's own (the file as ComfyUI runs it, dynamic FP8), each holding activations as it does
PREDICTING_STREAMS = 3


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


# a cgroup v1 "no limit" is the largest page count the kernel keeps (about 2**63); far above any memory
_NO_LIMIT = 1 << 60


def cgroup_memory_limit() -> int | None:
    """The memory limit of this process's cgroup, the smallest along its path (v2 memory.max,
    v1 memory.limit_in_bytes), or None where there is none or it cannot be read (not Linux)."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:
            root, name = "/sys/fs/cgroup", "memory.max"
        elif "memory" in controllers.split(","):
            root, name = "/sys/fs/cgroup/memory", "memory.limit_in_bytes"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        limits += [v for i in range(len(parts) + 1) if (v := _limit_in(os.path.join(root, *parts[:i], name)))]
    return min(limits) if limits else None


def _limit_in(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            value = f.read().strip()
    except OSError:
        return None
    return int(value) if value.isdigit() and int(value) < _NO_LIMIT else None


def memory_estimate(path: str, zstd: ZstdSettings | None, settings: CalibrationSettings | None = None) -> int:
    """What one file's run with `settings` (None: the default's) may take: `run_memory` of its
    header, plus zstd's windows and contexts. From the header alone; an unreadable header gets
    the base (it fails fast). A pipe (FIFO, /dev/fd/N) is not read twice: it gets the base and
    the largest zstd window."""
    settings = settings or CalibrationSettings()
    extra = compression_memory(zstd.level, zstd.threads) if zstd else 0
    base = _base(settings) + extra
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return base + MAX_WINDOW_BYTES
        source = open_input(locate(path))
    except (OSError, FP8StreamError):
        return base
    try:
        header = read_input_header(source)
        window = getattr(source.stream, "window_size", 0) if source.compressed else 0
    except FP8StreamError:
        return base
    finally:
        source.close()
    return run_memory(header.tensors, settings) + window + extra


def _base(settings: CalibrationSettings) -> int:
    forward = FORWARD_BASE if settings.method in FORWARD_METHODS else BASE_MEMORY
    return forward + (CUDA_HOST if settings.device == "cuda" else 0)


def estimate_terms(settings: CalibrationSettings) -> str:
    """What `run_memory` adds up for these settings, in a few words (a report's error)."""
    if settings.method in FORWARD_METHODS:
        return ("the forward pass: imports, its largest weight as float32 twice, read-ahead window, activations "
                "(of three streams with --predict), 2 x largest tensor, zstd")
    return "2 x largest tensor + 300 MB + zstd"


def run_memory(tensors: Sequence[TensorInfo], settings: CalibrationSettings) -> int:
    """One run's peak from the header's tensors: the base, and the stream's 2 x the largest
    tensor; with the forward pass (auto, forward), `forward_memory` on top."""
    stream = 2 * max((t.nbytes for t in tensors), default=0)
    if settings.method not in FORWARD_METHODS:
        return _base(settings) + stream
    return _base(settings) + stream + forward_memory(tensors, settings)


def forward_memory(tensors: Sequence[TensorInfo], settings: CalibrationSettings) -> int:
    """What the forward pass holds beside its base, from the header and the settings:
    - the largest FP8 weight (L elements) as float32, twice (its value and a transient of its
      size: the concatenation of a Linear fed by several tensors, a decode's output);
    - the read-ahead window, which may overrun by one weight's bytes, and the bytes of the weight
      being decoded (2 L);
    - the activations: every sample's tokens (image and text) x the widest FP8 weight dimension
      x 4 bytes x ACTIVATION_COPIES, for each stream (PREDICTING_STREAMS with --predict; the
      per-layer figures' temporaries, an input and an output, are within them);
    - the model's other parameters, loaded once as float32: every tensor that is not 2-D (norms,
      biases, convolutions, position tables; 2-D ones are Linears' weights, read one at a time,
      or embedding tables, read by the rows asked for).
    On a GPU the weights, the window and the activations are in device memory: the host holds
    the reads in flight (within the window) and the rest on its way there. An upper bound, not a
    forecast (tests/test_memory.py measures it)."""
    fp8 = [t for t in tensors if t.dtype.startswith("F8_") and len(t.shape) == 2]
    if not fp8:
        return 0  # nothing for the pass to run on: the stream alone
    largest = max(t.numel for t in fp8)
    widest = max(max(t.shape) for t in fp8)
    tokens = settings.forward_batch * (settings.forward_tokens + settings.forward_text_tokens)
    window = READ_AHEAD_BYTES.get(settings.device, READ_AHEAD_BYTES["cpu"])
    rest = sum(4 * t.numel for t in tensors if len(t.shape) != 2)
    if settings.device == "cuda":
        return window + 2 * largest + rest
    streams = PREDICTING_STREAMS if settings.predict else 1
    return 2 * 4 * largest + window + 2 * largest + tokens * widest * 4 * ACTIVATION_COPIES * streams + rest


def current_rss() -> int:
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
