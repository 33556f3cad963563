"""Progress on stderr, one line per phase of a run, each saying what it counts.

The phases of `calibrate`, in order: "preparing" (importing the model code, tracing the
conditioning path: no count, shown at once), "spooling input" (bytes, for a stream), "copying"
(bytes), "forward pass" (the checkpoint's FP8 layers it runs). Every bar of the tool comes from
here, on stderr only (stdout may carry a checkpoint or the JSON report), and only when enabled
(`--progress`, by default when stderr is a terminal). tqdm is imported on first use.
"""

from __future__ import annotations

import sys

PREPARING = "preparing: importing the model code, tracing the conditioning path"


def bar(desc: str, total: int, unit: str, enabled: bool, line: int = 0):
    """A bar over `total` units ('B': bytes, shown scaled; else a count such as 'layer');
    a context manager with update(n). Nothing is shown when not enabled."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=desc, file=sys.stderr,
                disable=not enabled, leave=False, position=line, dynamic_ncols=True)


def phase(desc: str, enabled: bool):
    """A phase with nothing to count (its line is shown at once and cleared when it ends)."""
    from tqdm import tqdm

    return tqdm(total=None, desc=desc, bar_format="{desc} ...", file=sys.stderr, disable=not enabled,
                leave=False)
