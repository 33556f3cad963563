"""One read: how many bytes a cold `fp8stream calibrate` reads from the block device.

Issue 24's bar: a cold run of the default on the 2-block full-width Flux-dev inventory reads
between 1.0x and 1.1x the input's size from the block device, inside a memory cgroup limited to
the run's RSS bound + 512 MiB and without a limit. This script builds that inventory (with
scripts/bench.py's generator) or takes --input, then runs `python -m fp8stream calibrate IN OUT`
twice as a child, first in a memory cgroup (v1 or v2), then without one, each after `sync` and
dropping the page cache, and prints per run: bytes read from the block device (the child's
`ru_inblock` x 512 from wait4: Linux counts it in 512-byte units, the task's `read_bytes` of
/proc/PID/io >> 9), the ratio to the input's size, bytes written (`ru_oublock` x 512, for
information), peak RSS (`ru_maxrss`), wall time and exit code.

The bound: two figures, both from the header. fp8stream's own estimate of the run,
`fp8stream.memory.memory_estimate` (what `--jobs`, `--max-memory` and `zoo` budget: for the
default, the forward pass's weight, read-ahead window and activations on top of its imports),
and the bound stated for the default (README: "about 2x the largest layer as float32 + 1 GB";
issue 24: 2 x the largest FP8 layer as F32 + 1 GB, 1,457 MiB on this inventory). Both are
printed, the larger one limits the run (or --limit-mb).

Dropping the page cache needs root; without it the script refuses, unless --warm (the runs are
then marked warm). `--cold input` evicts only the input's pages (posix_fadvise DONTNEED after
fsync) and leaves the libraries cached: the difference to `--cold all` is what the imports read.

The child's `ru_inblock` counts everything it reads: after dropping the whole cache, that is
the input and the libraries it imports (torch, diffusers: hundreds of MB). `--isolate` (root)
copies the input onto an ext4 filesystem of its own, on a loop device, and reads that device's
counter (/sys/dev/block/MAJ:MIN/stat) before and after each run: the input's reads alone, with
the whole cache dropped. Without it, the counter of the device holding the input is printed
too, but it counts every process's reads of that device.

    sudo python scripts/read_once.py                    # builds the inventory in a temp folder
    sudo python scripts/read_once.py --input flux-2.safetensors --json
    sudo python scripts/read_once.py --isolate          # the input's own reads, caches all dropped
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)

from bench import ROOT, child_env, drop_caches, filesystem, generate  # noqa: E402 (bench puts ROOT on the path)
from fp8stream.errors import FP8StreamError  # noqa: E402
from fp8stream.io.reader import open_positioned, read_input_header  # noqa: E402 (torch-free)
from fp8stream.memory import memory_estimate  # noqa: E402
from read_once_measure import (  # noqa: E402
    MemoryGroup,
    NotMeasurable,
    check_can_create,
    device_read_bytes,
    input_alone,
    measure,
)

MIB = 1 << 20
HEADROOM = 512 * MIB  # the "+ 512 MB" beside the bound, for the page cache
EXIT_REFUSED = 2  # cannot measure as asked (not root, no cgroup): one line, nothing run
NOT_COLD = ("cannot make the run cold (--cold {cold}: dropping the page cache needs root); run as root, "
            "or add --warm to measure anyway (marked warm)")
EXIT_RUN_FAILED = 1  # a calibrate run did not exit 0: its figures are printed, but are not a run's


@dataclass
class Bound:
    """The run's RSS bound, from the input's header."""

    bytes: int
    formula: str
    largest_fp8_layer: str | None
    tool_estimate_bytes: int  # fp8stream.memory.memory_estimate: --jobs' budget per file


def run_bound(path: str) -> Bound:
    """2 x the largest FP8 (E4M3, the layers fp8stream scales) layer as F32 + 1 GB (issue 24's
    1,457 MiB on the 2-block Flux-dev inventory), or the tool's own estimate where larger."""
    source = open_positioned(path)
    try:
        tensors = read_input_header(source).tensors
    finally:
        source.close()
    fp8 = [t for t in tensors if t.dtype == "F8_E4M3"]
    largest = max(fp8, key=lambda t: t.numel, default=None)
    forward = 2 * 4 * (largest.numel if largest else 0) + 10**9
    estimate = memory_estimate(path, None)
    if estimate > forward:
        return Bound(estimate, "fp8stream's --jobs estimate (fp8stream.memory.memory_estimate)",
                     largest.name if largest else None, estimate)
    formula = f"2 x {largest.numel if largest else 0:,} elements as F32 + 1 GB"
    return Bound(forward, formula, largest.name if largest else None, estimate)


def make_cold(mode: str, path: str) -> bool:
    """Whether the input is cold: `all` drops the page cache (root), `input` evicts the input's
    pages only (clean pages of an unmapped file; any user who can open it)."""
    if mode == "all":
        return drop_caches()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def calibrate_command(src: str, dst: str, method: str | None, device: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "fp8stream", "calibrate", "--no-progress"]
    cmd += ["--method", method] if method else []
    cmd += ["--device", device] if device else []
    return cmd + [src, dst]


def one_run(label: str, cmd: list[str], output: str, limit: int | None, args) -> dict:
    """One measured run: cold first (or marked warm), in a memory group when `limit` is set."""
    if os.path.exists(output):
        os.unlink(output)
    cold = make_cold(args.cold, args.input)
    if not cold and not args.warm:
        raise NotMeasurable(NOT_COLD.format(cold=args.cold))
    env = child_env()
    device_before = device_read_bytes(args.input)
    if limit is None:
        measured, group = measure(cmd, env), {}
    else:
        with MemoryGroup(limit) as memory_group:
            measured = measure(cmd, env, memory_group.procs_file)
            group = memory_group.figures()
    device_after = device_read_bytes(args.input)
    device = None if device_before is None or device_after is None else device_after - device_before
    input_bytes = os.path.getsize(args.input)
    figures = asdict(measured)
    if measured.exit_code == 0:  # the report of a run that went well says nothing about the reads
        figures.pop("stderr_tail")
    return {"run": label, "limit_bytes": limit, "cold": cold, **figures,
            "read_ratio": measured.read_bytes / input_bytes if input_bytes else None,
            "input_device_read_bytes": device, "input_device_alone": args.isolate,
            "input_device_ratio": device / input_bytes if device is not None and input_bytes else None, **group}


def measure_all(args, bound: Bound, output: str) -> list[dict]:
    """The limited run, then the unlimited one (--only picks one); the output removed between."""
    limit = args.limit_mb * MIB if args.limit_mb else bound.bytes + HEADROOM
    cmd = calibrate_command(args.input, output, args.method, args.device)
    plan = [("limited", limit), ("unlimited", None)]
    runs = []
    for label, run_limit in plan:
        if args.only in (None, label):
            runs.append(one_run(label, cmd, output, run_limit, args))
            print(row(runs[-1]), file=sys.stderr)
    return runs


def row(r: dict) -> str:
    limit = f"{r['limit_bytes'] / MIB:,.0f} MiB" if r["limit_bytes"] else "none"
    ratio = f"{r['read_ratio']:.2f}x" if r["read_ratio"] is not None else "-"
    oom = f", {r['oom_kills']} OOM kill(s)" if r.get("oom_kills") else ""
    device = ""
    if r.get("input_device_ratio") is not None:
        whose = "the input alone (its own device)" if r["input_device_alone"] else "every process, shared device"
        device = f"; input's device read {r['input_device_ratio']:.3f}x ({whose})"
    return (f"{r['run']:9s} limit {limit:>9s}: read {r['read_bytes'] / 1e6:9,.1f} MB = {ratio} the input{device}, "
            f"written {r['written_bytes'] / 1e6:,.1f} MB, peak RSS {r['peak_rss_bytes'] / MIB:,.0f} MiB, "
            f"{r['wall_s']:.1f} s, exit {r['exit_code']}{oom}{'' if r['cold'] else ' (WARM: not cold)'}")


def commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty", "--abbrev=7"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


def report(args, bound: Bound, runs: list[dict]) -> dict:
    return {"input": os.path.abspath(args.input), "input_bytes": os.path.getsize(args.input),
            "filesystem": filesystem(args.input), "commit": commit(), "cores": os.cpu_count(),
            "cold_mode": args.cold, "isolated": args.isolate, "method": args.method or "default",
            "device": args.device or "default",
            "bound": asdict(bound), "headroom_bytes": HEADROOM, "runs": runs}


def summary(result: dict) -> str:
    b = result["bound"]
    fs = result["filesystem"]
    lines = [f"input  {result['input']}: {result['input_bytes']:,} bytes ({result['input_bytes'] / 1e9:.2f} GB), "
             f"{fs['type']} on {fs['source']}; fp8stream {result['commit']}, {result['cores']} cores",
             f"bound  {b['bytes'] / MIB:,.0f} MiB = {b['formula']} (largest FP8 layer {b['largest_fp8_layer']}); "
             f"fp8stream's own --jobs estimate {b['tool_estimate_bytes'] / MIB:,.0f} MiB; limit = bound + 512 MiB",
             f"cold   --cold {result['cold_mode']}, method {result['method']}, device {result['device']}"]
    return "\n".join(lines + [row(r) for r in result["runs"]])


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", help="a checkpoint to measure (default: build the 2-block Flux-dev inventory)")
    ap.add_argument("--arch", default="flux", help="bench.py inventory to build without --input (default flux)")
    ap.add_argument("--blocks", type=int, default=2, help="its depth (default 2)")
    ap.add_argument("--workdir", help="where the inventory and the output go (default: a temp folder here)")
    ap.add_argument("--method", help="fp8stream's --method (default: the CLI's default)")
    ap.add_argument("--device", help="fp8stream's --device (default: the CLI's default)")
    ap.add_argument("--only", choices=["limited", "unlimited"], help="run one of the two")
    ap.add_argument("--limit-mb", type=int, help="the cgroup's limit in MiB (default: the bound + 512 MiB)")
    ap.add_argument("--cold", choices=["all", "input"], default="all",
                    help="all: drop the page cache (root, the bar's measure); input: evict the input only")
    ap.add_argument("--warm", action="store_true", help="run even if the cache cannot be dropped (marked warm)")
    ap.add_argument("--isolate", action="store_true",
                    help="put the input on a loop device of its own (root) and count that device's reads: "
                         "the input's reads alone, libraries excluded")
    ap.add_argument("--keep", action="store_true", help="keep the last run's output (and a built input)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        check_measurable(args)
        result = measure_input(args)
    except (NotMeasurable, FP8StreamError) as e:
        print(f"read_once: {e}", file=sys.stderr)
        return EXIT_REFUSED
    print(json.dumps(result, indent=1) if args.json else summary(result))
    return 0 if all(r["exit_code"] == 0 for r in result["runs"]) else EXIT_RUN_FAILED


def check_measurable(args) -> None:
    """Refuse before building or running anything: a missing input, a cache that cannot be
    dropped (without --warm), a memory cgroup that cannot be made (for the limited run)."""
    if args.input and not os.path.isfile(args.input):
        raise NotMeasurable(f"{args.input}: no such file")
    if args.cold == "all" and not args.warm and not drop_caches():
        raise NotMeasurable(NOT_COLD.format(cold=args.cold))
    if args.only != "unlimited":
        check_can_create()


def measure_input(args) -> dict:
    """The inventory built (without --input) in a scratch folder beside the output, both runs
    measured, the scratch folder removed (--keep moves the output and a built input out first)."""
    workdir = args.workdir or "."
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".read-once-") as scratch:
        if not args.input:
            args.input = os.path.join(scratch, f"{args.arch}-{args.blocks}.safetensors")
            generate(args.arch, args.blocks, args.input)
        output = os.path.join(scratch, "out.safetensors")
        bound = run_bound(args.input)
        given = args.input
        with contextlib.ExitStack() as stack:
            if args.isolate:
                args.input = stack.enter_context(input_alone(given, scratch))
            runs = measure_all(args, bound, output)
        args.input = given
        result = report(args, bound, runs)
        if args.keep:
            kept = [p for p in (output, args.input) if os.path.dirname(p) == scratch and os.path.exists(p)]
            for p in kept:
                os.replace(p, os.path.join(workdir, os.path.basename(p)))
    return result


if __name__ == "__main__":
    sys.exit(main())
