"""Checks on the whole command line that need the inputs' headers, made before any file starts.

An --include/--exclude pattern that matches no layer of any input is a typo: a usage error,
naming the pattern and a few layer names that exist, instead of a run that silently excludes
every layer (or none). A pattern that misses only some files of a batch is a note in those files'
reports. Inputs whose header cannot be read here (pipes, '-', broken files) are left to the run,
which reports them; when none can be read, nothing is checked.
"""

from __future__ import annotations

import os
import stat

from fp8stream.commands.inspect_read import model_header
from fp8stream.errors import FP8StreamError, UsageError
from fp8stream.formats.layers import take_inventory
from fp8stream.formats.selection import _matches as pattern_matches

EXAMPLES = 4


def _layer_names(path: str) -> list[str] | None:
    """The input's FP8 layer names ([] for a file the run will refuse anyway), or None for a pipe,
    whose header cannot be read here without consuming it."""
    if path == "-":
        return None
    try:
        if not (os.path.isdir(path) or stat.S_ISREG(os.stat(path).st_mode)):
            return None  # a FIFO or /dev/fd/N
        return [layer.name for layer in take_inventory(model_header(path)).layers]
    except (OSError, FP8StreamError):
        return []


def check_patterns(inputs: list[str], include: tuple[str, ...], exclude: tuple[str, ...]) -> dict[str, list[str]]:
    """Refuse a pattern matching no layer of any readable input; {input: notes} for the inputs
    that a pattern misses while others match it."""
    # A pattern is a usage error only when every input could be checked (no pipe) and none matched.
    patterns = [("--include", p) for p in include] + [("--exclude", p) for p in exclude]
    if not patterns:
        return {}
    names = {path: found for path in inputs if (found := _layer_names(path)) is not None}
    if not any(names.values()):
        return {}  # nothing readable to check against: the run reports its own errors
    notes: dict[str, list[str]] = {}
    for option, pattern in patterns:
        missed = [path for path, layers in names.items() if not any(pattern_matches(pattern, n) for n in layers)]
        if len(missed) == len(names) and len(names) == len(inputs):
            existing = sorted({n for layers in names.values() for n in layers})
            some = ", ".join(existing[:EXAMPLES]) + (", ..." if len(existing) > EXAMPLES else "")
            where = "the input" if len(inputs) == 1 else f"any of the {len(inputs)} inputs"
            raise UsageError(f"{option} {pattern!r} matches no layer of {where} "
                             f"(layers are named like: {some or 'none: no FP8 linear layer'})")
        for path in missed:
            notes.setdefault(path, []).append(f"{option} {pattern!r} matches no layer of this file")
    return notes
