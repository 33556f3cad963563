"""diffusers module names -> the checkpoint's (ComfyUI / original) layer names, per family: how
stats recorded on a diffusers model (`fp8stream.record`) find a checkpoint's layers.

The renames are derived, not written by hand: `scripts/derive_renames.py` runs each family's own
single-file converter (`Family.model.convert`) once on its real-size inventories through the row-id
mapping (fp8stream.forward.mapping.family_renames) and stores the result in RENAMES_FILE, so that
matching stats needs neither diffusers nor the converter's seconds; tests/test_renames.py fails
when the file and the converters differ. A family with no model code, or whose converter renames
nothing (its checkpoints use diffusers' names), has none.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

RENAMES_FILE = Path(__file__).with_name("diffusers_renames.json")
BLOCK = "{}"  # the block index in a stored name


@functools.cache
def stored_renames() -> dict[str, dict[str, str]]:
    """family name -> {diffusers module name: checkpoint layer name} ({} = the block index)."""
    return json.loads(RENAMES_FILE.read_text(encoding="utf-8"))


def rename(name: str, family: str) -> str | None:
    """A diffusers module name (bare: no model prefix) in the family's checkpoint spelling (None:
    the family has no rename for it)."""
    renames = stored_renames().get(family, {})
    if name in renames:
        return renames[name]
    parts = name.split(".")
    i = next((i for i, part in enumerate(parts) if part.isdecimal()), None)
    if i is None:
        return None
    layer = renames.get(".".join(parts[:i] + [BLOCK] + parts[i + 1:]))
    return None if layer is None else layer.replace(BLOCK, parts[i], 1)
