"""Model families the forward pass knows: one module each, listed in FAMILIES.

A family module defines `NAME`, `detect(names) -> bool` (bare key names: model prefix removed),
`config(shapes) -> dict` (diffusers config from tensor shapes, no hub access), `model_class()`,
`convert(state, config) -> dict` (checkpoint names -> diffusers names; the row-id mapping runs
it once on a stand-in), `inputs(config, plan) -> dict` (the forward's keyword arguments for
a batch of synthetic samples) and `value_sources(config)` (attention output projections -> the
value projections their input mixes, for the attention-mix estimate in engine.py). Adding a family is one module and one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Mapping

FAMILIES = ("flux", "sd3", "wan", "hunyuan_video15", "ltx2", "cosmos")


def family_module(name: str) -> ModuleType:
    return importlib.import_module(f"fp8stream.forward.families.{name}")


def detect_family(names: set[str]) -> ModuleType | None:
    """The family whose key names these are (bare names), or None."""
    for name in FAMILIES:
        module = family_module(name)
        if module.detect(names):
            return module
    return None


def count_blocks(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> int:
    """How many `prefix.N.` blocks the names hold (highest N + 1)."""
    found = [int(k[len(prefix):].split(".", 1)[0]) for k in shapes
             if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()]
    return max(found) + 1 if found else 0


def rename_prefixes(state: Mapping[str, object], table: Mapping[str, str]) -> dict:
    """The state with each name that starts with a key of `table` given that key's replacement
    (converters' gaps: names a diffusers converter leaves as they are)."""
    out = {}
    for name, value in state.items():
        old = next((p for p in table if name.startswith(p)), None)
        out[name if old is None else table[old] + name[len(old):]] = value
    return out
