"""Which layers get an activation scale: --include / --exclude globs and per-family presets.

Patterns and presets see names with the model prefix removed (and patterns the file's own
spelling too), so `model.diffusion_model.` checkpoints select the same layers as bare ones.
Presets keep the layers that reference recipes keep in high precision (docs/scales.md): embedders,
final projections, and for video DiTs the first and last blocks (each family's presets, edge_blocks).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from fp8stream import families
from fp8stream.errors import UsageError
from fp8stream.families.detect import detect_family
from fp8stream.families.family import Family
from fp8stream.names.prefixes import bare_name

PRESET_NAMES = ("auto", *families.preset_names())


@dataclass(frozen=True)
class Selection:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    preset: str | None = None


def _matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(bare_name(name), pattern)


def excluded_layers(layer_names: list[str], all_names: list[str], selection: Selection) -> dict[str, str]:
    """{layer name: why} for every layer the selection leaves out of FP8 activations."""
    out: dict[str, str] = {}
    family = _preset_family(selection.preset, all_names)
    edge: set[int] = set()
    if family is not None and family.edge_blocks:
        numbers = {int(m.group(1)) for n in layer_names if (m := re.match(family.edge_blocks, bare_name(n)))}
        if numbers:
            edge = {min(numbers), max(numbers)}
    for name in layer_names:
        bare = bare_name(name)
        if selection.include and not any(_matches(p, name) for p in selection.include):
            out[name] = "not matched by --include"
            continue
        hit = next((p for p in selection.exclude if _matches(p, name)), None)
        if hit is not None:
            out[name] = f"--exclude {hit}"
            continue
        if family is None:
            continue
        why = next((w for p, w in family.presets if fnmatch.fnmatchcase(bare, p)), None)
        if why is None and edge and (m := re.match(family.edge_blocks, bare)) and int(m.group(1)) in edge:
            why = "first/last block of a video DiT"
        if why is not None:
            out[name] = f"preset {family.name}: {why}"
    return out


def _preset_family(preset: str | None, all_names: list[str]) -> Family | None:
    """The family whose preset `--preset` names (`auto`: the file's family), or None without one."""
    presets = families.preset_names()
    if preset == "auto":
        preset = detect_family(all_names)
        if preset not in presets:
            what = f"no preset for family {preset}" if preset else "model family not recognised"
            raise UsageError(f"--preset auto: {what} (use --preset {'|'.join(presets)})")
    if preset is not None and preset not in presets:
        raise UsageError(f"--preset {preset}: unknown (choose from {', '.join(PRESET_NAMES)})")
    return families.by_name(preset) if preset is not None else None
