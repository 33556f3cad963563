"""diffusers module names -> the checkpoint's (ComfyUI / original) layer names, per family: how
stats recorded on a diffusers model (`fp8stream.record`) find a checkpoint's layers.

The renames are derived, not written by hand: `scripts/derive_renames.py` runs each family's own
single-file converter (`Family.model.convert`) once on its real-size inventories through the row-id
mapping (fp8stream.methods.forward.mapping.family_renames) and writes the result into the family's module
(`DIFFUSERS_RENAMES`, passed to its Family as `diffusers_renames`), so that matching stats needs
neither diffusers nor the converter's seconds; tests/test_renames.py fails when a module and its
converter differ. A family with no model code, or whose converter renames nothing (its checkpoints
use diffusers' names), has none.
"""

from __future__ import annotations

import functools

from fp8stream.families import by_name

BLOCK = "{}"  # the block index in a stored name


@functools.cache
def _renames(family: str) -> dict[str, str]:
    """{diffusers module name: checkpoint layer name} of this family ({} = the block index; empty
    for a name no family has)."""
    try:
        return dict(by_name(family).diffusers_renames)
    except KeyError:  # a family name the registry lacks (matching was told it): nothing to rename
        return {}


def rename(name: str, family: str) -> str | None:
    """A diffusers module name (bare: no model prefix) in the family's checkpoint spelling (None:
    the family has no rename for it)."""
    renames = _renames(family)
    if name in renames:
        return renames[name]
    parts = name.split(".")
    i = next((i for i, part in enumerate(parts) if part.isdecimal()), None)
    if i is None:
        return None
    layer = renames.get(".".join(parts[:i] + [BLOCK] + parts[i + 1:]))
    return None if layer is None else layer.replace(BLOCK, parts[i], 1)
