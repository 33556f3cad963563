#!/usr/bin/env python3
"""Truncate a checkpoint written by the safetensors library at every 1/64 of its size and run
`fp8stream calibrate` on each (a child process, as a user would): each must end in one error
line, exit code 1, and no output or temporary file.

    python scripts/truncate.py [--layers N]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from conftest import subprocess_env  # noqa: E402
from hostile import reference_checkpoint, truncated_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "reference.safetensors")
        reference_checkpoint(path, layers=args.layers, shape=(512, 1024))
        with open(path, "rb") as f:
            blob = f.read()
        started = time.monotonic()
        messages: collections.Counter = collections.Counter()
        failures = 0
        for k in range(64):
            try:
                line = truncated_run(blob, len(blob) * k // 64, tmp, subprocess_env())
                messages[line.split(":")[-1].strip() if "truncated" not in line else "... (truncated)"] += 1
            except AssertionError as e:
                failures += 1
                print(f"cut {k}/64: {e}")
        print(f"{len(blob)} bytes cut at k/64 for k = 0..63: {64 - failures} clean errors, {failures} failures "
              f"in {time.monotonic() - started:.0f} s")
        for message, n in messages.most_common():
            print(f"  {n} x {message}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
