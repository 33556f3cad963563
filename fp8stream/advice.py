"""What a report tells the user to do: each warning with the action that fixes it, repeats of one
warning summarised once with the layers it concerns, and the next step after a run.

Warnings come from the calibration methods as text with numbers in it ("extreme estimated range
(amax 3.2e+04)") and a kind (scales/layer_warning.py); two warnings that differ only in their
numbers are the same warning, and the kind alone picks the fix.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from fp8stream.name_patterns import compact_names
from fp8stream.scales.layer_warning import LayerWarning, WarningKind

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?x?", re.IGNORECASE)
_BLOCK_NUMBER = re.compile(r"(^|\.)\d+(\.|$)")  # the first numeric part of a name: the block index
MAX_NAMED = 6  # layers named in a summary line; the rest are counted

_EMPTY = "the weights are empty: re-export the checkpoint, or keep them weight-only: {exclude}"
# What fixes each kind of warning; {exclude} is replaced by the --exclude arguments.
_FIXES = {
    WarningKind.EXTREME_RANGE: "keep them weight-only: {exclude}",
    WarningKind.RANGE_UNCERTAIN: "measure real inputs (python -m fp8stream.record, then --method stats --stats FILE), "
                                 "or try --sim-mode hybrid; or keep them weight-only: {exclude}",
    WarningKind.ASSUMED_INPUT: "measure real inputs (python -m fp8stream.record, then --method stats --stats FILE), "
                               "or keep them weight-only: {exclude}",
    WarningKind.NO_STATS: "record stats that reach these layers, or pair names with --map FILE",
    WarningKind.NO_HISTOGRAM: "record with histograms, or use --rule max",
    WarningKind.NEVER_REACHED: "record with inputs that reach these layers, or keep them weight-only: {exclude}",
    WarningKind.NAN_WEIGHT: "the weights are damaged: re-export the checkpoint, or keep them weight-only: {exclude}",
    WarningKind.EMPTY_WEIGHT: _EMPTY,
    WarningKind.ZERO_INPUT: _EMPTY,  # an input all zero in the pass: the weights that make it are empty
    WarningKind.BAD_WEIGHT_SCALE: "the weight scale is broken: re-export the checkpoint",
    WarningKind.NO_RANGE: "keep them weight-only: {exclude}",
    WarningKind.NO_SPOOL: "drop --no-spool: the stream is then spooled to a temporary file and the forward pass runs",
}
_DEFAULT_FIX = "if in doubt, keep them weight-only: {exclude}"  # WarningKind.OTHER


def without_numbers(text: str) -> str:
    """The text with every number replaced by '#': texts that differ only in numbers match."""
    return _NUMBER.sub("#", text)


def _span(values: list[str]) -> str:
    """One number position across texts: the value, or 'least..greatest'."""
    if len(set(values)) == 1:
        return values[0]
    suffix = "x" if all(v.lower().endswith("x") for v in values) else ""
    numbers = [float(v.rstrip("xX")) for v in values]
    return f"{min(numbers):.4g}..{max(numbers):.4g}{suffix}"


def merged_numbers(texts: list[str]) -> str:
    """Texts equal but for their numbers, said once: each number that differs as its range
    ('amax 95.61..979.1 x margin 3')."""
    skeleton = _NUMBER.split(texts[0])
    columns = list(zip(*(_NUMBER.findall(t) for t in texts), strict=False))
    out = [skeleton[0]]
    for column, text in zip(columns, skeleton[1:], strict=False):
        out += [_span(list(column)), text]
    return "".join(out)


@dataclass
class WarningGroup:
    text: str  # the first layer's wording (with its numbers)
    kind: WarningKind
    layers: list[str] = field(default_factory=list)
    varies: bool = False  # the numbers differ between layers
    texts: list[str] = field(default_factory=list)  # every layer's wording, for the ranges of its numbers


def group_warnings(layer_warnings: list[tuple[str, list[LayerWarning]]]) -> list[WarningGroup]:
    """[(layer, warnings)] -> one group per warning (numbers ignored), in first-seen order."""
    groups: dict[tuple[WarningKind, str], WarningGroup] = {}
    for layer, warnings in layer_warnings:
        for w in warnings:
            group = groups.setdefault((w.kind, without_numbers(w.text)), WarningGroup(w.text, w.kind))
            group.varies |= w.text != group.text
            group.texts.append(w.text)
            if layer not in group.layers:
                group.layers.append(layer)
    return list(groups.values())


def exclude_arguments(layers: list[str], all_layers: list[str], full: bool = False) -> str:
    """The --exclude arguments that select exactly `layers`: a glob with the block numbers
    wildcarded (the first numeric part) where it matches only warned layers (`double_blocks.*.img_mlp.2`),
    else the name;
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
    template = _FIXES.get(group.kind, _DEFAULT_FIX)
    return template.format(exclude=exclude_arguments(group.layers, all_layers, full))


def names_text(names: list[str], word: str = "layer", every_name: bool = False) -> str:
    """Names as a reader scans them: one name, or 'N layers: ' and their brace patterns (the
    first few, then how many more, unless `every_name`)."""
    if len(names) == 1:
        return names[0]
    patterns = compact_names(names)
    shown = patterns if every_name else patterns[:MAX_NAMED]
    more = f", ... ({len(patterns) - len(shown)} more patterns: --verbose)" if len(shown) < len(patterns) else ""
    return f"{len(names)} {word}s: {', '.join(shown)}{more}"


def render_warnings(layer_warnings: list[tuple[str, list[LayerWarning]]], all_layers: list[str],
                    every_name: bool = False) -> list[str]:
    """One block per distinct warning: what (each number that differs as its range), on which
    layers, and the fix."""
    lines = []
    for group in group_warnings(layer_warnings):
        text = merged_numbers(group.texts) if group.varies else group.text
        lines.append(f"warning: {text} [{names_text(group.layers, every_name=every_name)}]")
        lines.append(f"  fix: {fix_for(group, all_layers)}")
    return lines
