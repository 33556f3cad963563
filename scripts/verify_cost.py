#!/usr/bin/env python3
"""What `calibrate --verify` costs: the same checkpoint calibrated with and without it, alternately
(who goes first alternates too), each run timed as a whole process and its reads counted (the
child's `ru_inblock` x 512: bytes from the block device, so a warm run reads ~0); medians quoted.

--verify keeps the stream (every tensor hashed as it is read) and reads the written file back
before the rename: where a plain run copies at fixed places, taking the forward pass's reads, a
--verify run reads IN once more (the stream, then the pass's reads by name) and OUT once.

By default it builds the 2-block full-width Flux-dev inventory (scripts/bench.py's generator,
1.37 GB), or takes --input. `--cold` drops the page cache before every run (root).

    python scripts/verify_cost.py --cold --repeats 2
    python scripts/verify_cost.py --input model.safetensors --method simulate --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

SCRIPTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SCRIPTS)

from bench import child_env, drop_caches, generate  # noqa: E402 (bench puts ROOT on the path)
from read_once_measure import measure  # noqa: E402


def calibrate(src: str, dst: str, method: str, device: str, verify: bool) -> list[str]:
    return [sys.executable, "-m", "fp8stream", "calibrate", "--force", "--no-progress", "--method", method,
            "--device", device, src, dst] + (["--verify"] if verify else [])


def run_pairs(src: str, dst: str, args: argparse.Namespace) -> dict[str, list]:
    env = child_env()
    runs: dict[str, list] = {"plain": [], "verify": []}
    for i in range(args.repeats):
        for name in (("plain", "verify") if i % 2 == 0 else ("verify", "plain")):
            if os.path.exists(dst):
                os.unlink(dst)
            if args.cold and not drop_caches():
                raise SystemExit("verify_cost: --cold needs root (dropping the page cache)")
            m = measure(calibrate(src, dst, args.method, args.device, name == "verify"), env)
            if m.exit_code != 0:
                raise SystemExit(f"verify_cost: {name} run exited {m.exit_code}: {m.stderr_tail[-500:]}")
            runs[name].append({"wall_s": m.wall_s, "read_bytes": m.read_bytes, "written_bytes": m.written_bytes})
    return runs


def summary(runs: dict[str, list], size: int, args: argparse.Namespace) -> dict:
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "read_bytes")}
           for name, rs in runs.items()}
    plain, verify = med["plain"], med["verify"]
    return {"input_bytes": size, "method": args.method, "device": args.device, "cold": args.cold,
            "repeats": args.repeats, "runs": runs, "plain": plain, "verify": verify,
            "time_ratio": verify["wall_s"] / plain["wall_s"],
            "extra_read_bytes": verify["read_bytes"] - plain["read_bytes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="a checkpoint (default: build the 2-block Flux-dev inventory)")
    parser.add_argument("--workdir", help="where to build and write (default: a temporary folder)")
    parser.add_argument("--method", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every run (root)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src = args.input or os.path.join(tmp, "flux-2.safetensors")
        if args.input is None:
            generate("flux", 2, src)
        size = os.path.getsize(src)
        result = summary(run_pairs(src, os.path.join(tmp, "out.safetensors"), args), size, args)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    p, v = result["plain"], result["verify"]
    print(f"{size / 1e9:.2f} GB, --method {args.method} --device {args.device}, "
          f"{'cold' if args.cold else 'warm'}, medians of {args.repeats}: "
          f"plain {p['wall_s']:.1f} s reading {p['read_bytes'] / size:.2f}x IN from disk; "
          f"--verify {v['wall_s']:.1f} s (x{result['time_ratio']:.2f}) reading {v['read_bytes'] / size:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
