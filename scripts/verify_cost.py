#!/usr/bin/env python3
"""What `calibrate --verify` costs: a checkpoint calibrated with and without it, alternately,
medians quoted; plus `fp8stream verify IN OUT` alone and xxh3's raw speed.

    python scripts/verify_cost.py [--layers N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import xxhash

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from conftest import subprocess_env  # noqa: E402
from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint  # noqa: E402


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "fp8stream", *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - started, r.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = subprocess_env()
    data = os.urandom(256 << 20)
    started = time.perf_counter()
    xxhash.xxh3_128(data).digest()
    print(f"xxh3-128: {len(data) / (time.perf_counter() - started) / 1e9:.1f} GB/s on one core")
    del data
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        write_checkpoint(src, [t for i in range(args.layers)
                               for t in comfy_fp8_linear(f"blocks.{i}.mlp", (8192, 8192), seed=i)])
        size = os.path.getsize(src)
        plain, verified, inside = [], [], []
        for _ in range(args.repeats):
            plain.append(timed(["calibrate", "--force", "--json", src, out], env)[0])
            seconds, stdout = timed(["calibrate", "--force", "--verify", "--json", src, out], env)
            verified.append(seconds)
            inside.append(float(json.loads(stdout)["verify"].split("verify took ")[1].split(" s")[0]))
        alone = statistics.median(timed(["verify", src, out], env)[0] for _ in range(args.repeats))
        p, v = statistics.median(plain), statistics.median(verified)
        print(f"{size / 1e9:.2f} GB checkpoint, medians of {args.repeats}: calibrate {p:.1f} s, "
              f"with --verify {v:.1f} s "
              f"(+{100 * (v - p) / p:.0f}%); hashing + re-reading inside the run {statistics.median(inside):.2f} s; "
              f"`fp8stream verify IN OUT` alone {alone:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
