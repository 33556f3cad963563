#!/usr/bin/env python3
"""Issue 24's checks on a GPU machine, in one command: CPU and CUDA agree, CUDA is deterministic,
and a CUDA run reads its input once.

It builds the full-width Flux-dev inventory `--blocks` deep (scripts/bench.py's generator; 2
blocks, 1.37 GB: issue 24's one-read inventory), calibrates it with the default method on
`--device cpu` and on the device under test, and prints one JSON document:

- `scales`: each layer's input_scale on the device against the CPU's; the bar is 1e-5 relative
  (issue 24's determinism decision); the worst layers are listed.
- `repeat`: two runs on the device give the same bytes, and `--jobs 2` over two copies of the
  input gives those bytes again for both.
- `read`: what one run on the device reads from the block device (the child's `ru_inblock` x
  512) after the input's pages are evicted (posix_fadvise DONTNEED: no root needed; the
  libraries stay cached from the runs before), against the input's size: one read is 1.0x to
  1.1x (the BF16 tensors the bound watches are read by the pass and again by the copy, which
  shows them to the bound in order: 0.10 GB, 7.5% of the 2-block inventory).

Exit 0: every check passed; 1: one failed (the JSON says which); 2: no CUDA device (one line);
3: a calibrate run failed (its command and stderr's tail). No network, nothing beyond torch's CUDA.

    python scripts/device_check.py                 # on the GPU machine
    python scripts/device_check.py --blocks 2 --keep /tmp/dc
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)

from bench import child_env, generate  # noqa: E402 (bench puts ROOT on the path)
from fp8stream.io.reader import LazyFile  # noqa: E402 (torch-free)
from fp8stream.names.suffixes import INPUT_SCALE  # noqa: E402
from fp8stream.verify import scale_value  # noqa: E402 (torch-free)
from read_once import make_cold  # noqa: E402
from read_once_measure import measure  # noqa: E402

TOLERANCE = 1e-5  # relative, per layer: issue 24's bar for CPU against CUDA scales
EXIT_FAILED, EXIT_NO_DEVICE, EXIT_RUN_FAILED = 1, 2, 3


class RunFailed(Exception):
    """A calibrate run did not exit 0 (5 is a run that scaled nothing, also a failure here)."""


def env() -> dict[str, str]:
    return dict(child_env(), PYTHONWARNINGS="ignore")


def device_name(device: str) -> str | None:
    """The device's name, or None where torch sees no CUDA device (asked in a child: no torch here)."""
    if not device.startswith("cuda"):
        return device  # `--device cpu`: a dry run of this script's plumbing, on any machine
    probe = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env())
    return r.stdout.strip() or None


def calibrate(args: list[str]) -> str:
    """One run's --json report(s), a line each."""
    cmd = [sys.executable, "-m", "fp8stream", "calibrate", "--no-progress", "--force", "--json", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env())
    if r.returncode != 0:
        raise RunFailed(f"{' '.join(cmd[3:])}: exit {r.returncode}: {r.stderr.strip()[-800:]}")
    return r.stdout


def scales(path: str) -> dict[str, float]:
    """Every layer's input_scale in a written file (an F32 scalar each)."""
    with LazyFile(path) as f:
        found = {t.name[: -len(INPUT_SCALE)]: scale_value(t, f.read(t))
                 for t in f.header.tensors if t.name.endswith(INPUT_SCALE)}
    return {layer: value for layer, value in found.items() if value is not None}


def compare_scales(cpu: dict[str, float], gpu: dict[str, float], worst: int = 10) -> dict:
    """Relative difference per layer, the worst listed; layers scaled on one side only fail."""
    rel = {n: abs(gpu[n] - cpu[n]) / abs(cpu[n]) if cpu[n] else float(gpu[n] != 0) for n in cpu.keys() & gpu.keys()}
    ranked = sorted(rel.items(), key=lambda kv: -kv[1])
    only = sorted(cpu.keys() ^ gpu.keys())
    return {"layers": len(rel), "max_rel": ranked[0][1] if ranked else None, "tolerance": TOLERANCE,
            "over": sum(1 for _, r in ranked if r > TOLERANCE), "only_one_side": only[:worst],
            "worst": [{"layer": n, "rel": r, "cpu": cpu[n], "device": gpu[n]} for n, r in ranked[:worst]],
            "ok": bool(rel) and not only and all(r <= TOLERANCE for r in rel.values())}


def check_repeat(src: str, first: str, work: str, device: str) -> dict:
    """A second run's bytes, then --jobs 2 over two copies of the input, against the first run's."""
    again = os.path.join(work, "again.safetensors")
    calibrate(["--device", device, src, again])
    inputs = [os.path.join(work, "a.safetensors"), os.path.join(work, "b.safetensors")]
    for p in inputs:
        try:
            os.link(src, p)  # the same bytes under another name, no copy
        except OSError:  # across filesystems
            shutil.copyfile(src, p)
    out_dir = os.path.join(work, "jobs")
    calibrate(["--device", device, "--jobs", "2", "--out-dir", out_dir, *inputs])
    jobs = {os.path.basename(p): filecmp.cmp(first, os.path.join(out_dir, os.path.basename(p)), shallow=False)
            for p in inputs}
    same = filecmp.cmp(first, again, shallow=False)
    return {"two_runs_same_bytes": same, "jobs2_same_bytes": jobs, "ok": same and all(jobs.values())}


def check_read(src: str, work: str, device: str) -> dict:
    """Bytes one run on the device reads from the block device, its input's pages evicted first."""
    dst = os.path.join(work, "cold.safetensors")
    cold = make_cold("input", src)
    m = measure([sys.executable, "-m", "fp8stream", "calibrate", "--no-progress", "--force", "--device", device,
                 src, dst], env())
    if m.exit_code != 0:
        raise RunFailed(f"the read run exited {m.exit_code}: {m.stderr_tail[-800:]}")
    size = os.path.getsize(src)
    return {"input_bytes": size, "read_bytes": m.read_bytes, "ratio": m.read_bytes / size,
            "input_evicted": cold, "wall_s": round(m.wall_s, 2),
            "counts": "ru_inblock x 512 of the child: bytes from the block device (tmpfs or an overlay counts 0)",
            "ok": cold and 0.9 <= m.read_bytes / size <= 1.1}


def run_checks(args: argparse.Namespace, work: str, name: str) -> dict:
    src = args.input or os.path.join(work, f"flux-{args.blocks}.safetensors")
    if args.input is None:
        generate("flux", args.blocks, src)
    cpu_out, dev_out = os.path.join(work, "cpu.safetensors"), os.path.join(work, "device.safetensors")
    cpu_run = json.loads(calibrate(["--device", "cpu", src, cpu_out]))
    dev_run = json.loads(calibrate(["--device", args.device, src, dev_out]))
    result = {"device": args.device, "device_name": name, "input": src, "input_bytes": os.path.getsize(src),
              "seconds": {"cpu": cpu_run["seconds"], "device": dev_run["seconds"]},
              "peak_vram_bytes": dev_run["peak_vram_bytes"],
              "scales": compare_scales(scales(cpu_out), scales(dev_out)),
              "repeat": check_repeat(src, dev_out, work, args.device),
              "read": check_read(src, work, args.device)}
    result["ok"] = all(result[k]["ok"] for k in ("scales", "repeat", "read"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2, help="depth of the Flux-dev inventory (full width)")
    parser.add_argument("--input", help="calibrate this checkpoint instead of building one")
    parser.add_argument("--device", default="cuda", help="the device under test (cpu: a dry run of the script)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files (default: a temp folder)")
    args = parser.parse_args(argv)
    name = device_name(args.device)
    if name is None:
        print(f"device_check: no CUDA device here (torch.cuda.is_available() is false): nothing to check on "
              f"{args.device}", file=sys.stderr)
        return EXIT_NO_DEVICE
    try:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            result = run_checks(args, args.keep, name)
        else:
            with tempfile.TemporaryDirectory() as work:
                result = run_checks(args, work, name)
    except RunFailed as e:
        print(f"device_check: {e}", file=sys.stderr)
        return EXIT_RUN_FAILED
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
