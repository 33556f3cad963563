#!/usr/bin/env python3
"""`kill -9` during `fp8stream calibrate` at random moments, N times (default 50).

After each kill: nothing at OUT, or a complete file that verifies against the input; the
input's SHA-256 unchanged; any temporary file belongs to a dead process. Every 10th kill and
at the end, a full run must leave no temporary file behind.

    python scripts/killtest.py [--kills N] [--seed S]

SIGINT and SIGTERM (which must also end in one line and exit 130 / 143): scripts/signaltest.py.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from conftest import subprocess_env  # noqa: E402
from fp8stream.synthetic.checkpoint import comfy_fp8_linear, write_checkpoint  # noqa: E402
from hostile import kill_calibrate, temps_in  # noqa: E402


def full_run(src: str, out: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "fp8stream", "calibrate", "--force", src, out],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert temps_in(os.path.dirname(out)) == [], "a full run left a temporary file"
    os.unlink(out)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = subprocess_env()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
        write_checkpoint(src, [t for i in range(6) for t in comfy_fp8_linear(f"blocks.{i}.mlp", (4096, 4096), seed=i)])
        duration = full_run(src, out, env)
        print(f"input {os.path.getsize(src) / 1e6:.0f} MB; a full run takes {duration:.1f} s; "
              f"kills at uniform random moments in [0, {1.1 * duration:.1f}] s")
        landed: collections.Counter = collections.Counter()
        failures = 0
        for i in range(args.kills):
            try:
                landed[kill_calibrate(src, out, env, rng.uniform(0, 1.1 * duration))] += 1
                if os.path.exists(out):
                    os.unlink(out)
                if (i + 1) % 10 == 0:
                    full_run(src, out, env)
            except AssertionError as e:
                failures += 1
                print(f"kill {i}: {e}")
        full_run(src, out, env)
        print(f"{args.kills} kills: {dict(landed)}; {failures} broken promises; "
              "no temporary file after the next full runs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
