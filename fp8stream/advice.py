"""What a report tells the user to do: each warning with the action that fixes it, repeats of one
warning summarised once with the layers it concerns, and the next step after a run.

Warnings come from the calibration methods as free text with numbers in it ("extreme estimated
range (amax 3.2e+04)"); two warnings that differ only in their numbers are the same warning.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?x?", re.IGNORECASE)
_BLOCK_NUMBER = re.compile(r"(^|\.)\d+(\.|$)")  # the first numeric part of a name: the block index
MAX_NAMED = 6  # layers named in a summary line; the rest are counted

# (words in the warning, what fixes it); {exclude} is replaced by the --exclude arguments.
_FIXES = (
    ("extreme", "keep them weight-only: {exclude}"),
    ("range uncertain", "measure real inputs (python -m fp8stream.record, then --method stats --stats FILE), "
                        "or try --sim-mode hybrid; or keep them weight-only: {exclude}"),
    ("ASSUMED", "measure real inputs (python -m fp8stream.record, then --method stats --stats FILE), "
                "or keep them weight-only: {exclude}"),
    ("no real-data stats", "record stats that reach these layers, or pair names with --map FILE"),
    ("no histogram", "record with histograms, or use --rule max"),
    ("recorded amax 0", "record with inputs that reach these layers, or keep them weight-only: {exclude}"),
    ("NaN", "the weights are damaged: re-export the checkpoint, or keep them weight-only: {exclude}"),
    ("all zero", "the weights are empty: re-export the checkpoint, or keep them weight-only: {exclude}"),
    ("weight_scale is", "the weight scale is broken: re-export the checkpoint"),
    ("no usable range", "keep them weight-only: {exclude}"),
    ("--no-spool", "drop --no-spool: the stream is then spooled to a temporary file and the forward pass runs"),
)
_DEFAULT_FIX = "if in doubt, keep them weight-only: {exclude}"


@dataclass
class WarningGroup:
    text: str  # the first layer's wording (with its numbers)
    layers: list[str] = field(default_factory=list)
    varies: bool = False  # the numbers differ between layers


def group_warnings(layer_warnings: list[tuple[str, list[str]]]) -> list[WarningGroup]:
    """[(layer, warnings)] -> one group per warning (numbers ignored), in first-seen order."""
    groups: dict[str, WarningGroup] = {}
    for layer, warnings in layer_warnings:
        for w in warnings:
            group = groups.setdefault(_NUMBER.sub("#", w), WarningGroup(w))
            group.varies |= w != group.text
            if layer not in group.layers:
                group.layers.append(layer)
    return list(groups.values())


def exclude_arguments(layers: list[str], all_layers: list[str], full: bool = False) -> str:
    """The --exclude arguments that select exactly `layers`: a glob with the block numbers
    wildcarded (the first numeric part) where it matches only warned layers (`double_blocks.*.img_mlp.2`), else the name;
    the first few, and a count of the rest."""
    warned = set(layers)
    args: list[str] = []
    for name in layers:
        glob = _BLOCK_NUMBER.sub(r"\1*\2", name, count=1)
        if all(n in warned for n in all_layers if fnmatch.fnmatchcase(n, glob)):
            name = glob
        if name not in args:
            args.append(name)
    if full:
        return " ".join(f"--exclude '{a}'" for a in args)
    named = " ".join(f"--exclude '{a}'" for a in args[:MAX_NAMED])
    return named + (f" ... ({len(args) - MAX_NAMED} more: see the advice in --json)" if len(args) > MAX_NAMED else "")


def fix_for(group: WarningGroup, all_layers: list[str], full: bool = False) -> str:
    """The action that fixes the warning; `full`: every --exclude argument (for --json)."""
    template = next((fix for words, fix in _FIXES if words in group.text), _DEFAULT_FIX)
    return template.format(exclude=exclude_arguments(group.layers, all_layers, full))


def render_warnings(layer_warnings: list[tuple[str, list[str]]], all_layers: list[str]) -> list[str]:
    """One block per distinct warning: what, on which layers, and the fix."""
    lines = []
    for group in group_warnings(layer_warnings):
        n = len(group.layers)
        where = ", ".join(group.layers[:MAX_NAMED]) + (", ..." if n > MAX_NAMED else "")
        where = where if n == 1 else f"{n} layers: {where}"
        text = f"{group.text} (numbers of the first; they differ per layer)" if group.varies else group.text
        lines.append(f"warning: {text} [{where}]")
        lines.append(f"  fix: {fix_for(group, all_layers)}")
    return lines
