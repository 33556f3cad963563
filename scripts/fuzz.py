#!/usr/bin/env python3
"""Long fuzz run: the hypothesis targets of tests/hostile.py, counting every uncaught exception.

    python scripts/fuzz.py [--header N] [--calibrate N] [--seed S]

Defaults: 80,000 header cases + 25,000 whole-`calibrate` cases. An uncaught exception is
anything but a clean FP8StreamError (and, for calibrate, any temp or partial output left, or
an input modified). Exit 1 if there was any.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

import hostile  # noqa: E402


def run(name: str, target, strategy, cases: int, rng_seed: int) -> tuple[int, collections.Counter, dict]:
    failures: collections.Counter = collections.Counter()
    examples: dict[str, bytes] = {}
    count = 0

    @seed(rng_seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(blob: bytes) -> None:
        nonlocal count
        count += 1
        try:
            target(blob)
        except Exception as e:  # every one is a finding: record it, keep going
            frame = traceback.extract_tb(e.__traceback__)[-1]
            key = f"{type(e).__name__}: {str(e)[:100]} at {os.path.basename(frame.filename)}:{frame.lineno}"
            failures[key] += 1
            examples.setdefault(key, blob)

    started = time.monotonic()
    case()
    print(f"{name}: {count} cases in {time.monotonic() - started:.0f} s, {sum(failures.values())} uncaught exceptions")
    return count, failures, examples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--header", type=int, default=80_000)
    parser.add_argument("--calibrate", type=int, default=25_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    total, all_failures = 0, collections.Counter()
    for name, target, strategy, cases in [
            ("header", hostile.header_target, hostile.header_blobs(), args.header),
            ("calibrate", hostile.calibrate_target, hostile.checkpoints(), args.calibrate)]:
        count, failures, examples = run(name, target, strategy, cases, args.seed)
        total += count
        all_failures += failures
        for key, n in failures.most_common():
            print(f"  {n} x {key}\n    e.g. {examples[key][:160]!r}")
    print(f"total: {total} cases, {sum(all_failures.values())} uncaught exceptions")
    return 1 if all_failures else 0


if __name__ == "__main__":
    sys.exit(main())
