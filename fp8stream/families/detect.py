"""Which model family a checkpoint is, from its header alone (torch-free): the one detector.

Presets, the producer graph of `--method simulate`, stats name matching, the forward pass,
`inspect` and the calibration report all ask `detect`. Names lose their model prefix first
(names/prefixes.py); then the families of the registry are tried in order and the first whose
detection key is present decides (diffusers' own test never says "unknown": anything it does not
know comes back as `v1`; here it is None). A key counts as present when the file holds it, or
holds it as a layer name (the key minus `.weight`/`.bias`): some callers know only layer names.

Variants come from the shapes, not from which block numbers exist (diffusers labels Flux.2
klein as dev, Wan 2.2 TI2V-5B as i2v-14B and a pruned SD3.5 as `v1`): the width of the
family's input projection, its input channels and the block counts decide (each family's `variant`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from fp8stream.families import FAMILIES
from fp8stream.families.family import Family, Shapes, count_blocks
from fp8stream.names.prefixes import split_prefix


@dataclass(frozen=True)
class Detection:
    family: str  # flux, flux2, sd3, wan, qwen-image, ... (a Family's name)
    variant: str  # the named model the shapes fit (flux2-klein-4b), else the family
    key: str  # the detection key found (bare name)
    origin: str  # where the key test comes from (diffusers' CHECKPOINT_KEY_NAMES entry, or ours)
    prefix: str = ""  # the model prefix the file's names carry
    width: int | None = None
    blocks: tuple[int, ...] = ()

    def describe(self) -> str:
        """`flux2-klein-4b (width 3072, 5+20 blocks; key single_stream_modulation.lin.weight)`."""
        sizes = []
        if self.width:
            sizes.append(f"width {self.width}")
        if self.blocks:
            one = self.blocks == (1,)
            sizes.append("+".join(map(str, self.blocks)) + (" block" if one else " blocks"))
        return f"{self.variant} ({', '.join(sizes)}; key {self.key})" if sizes else f"{self.variant} (key {self.key})"

    def to_json(self) -> dict:
        return {"family": self.family, "variant": self.variant, "key": self.key, "origin": self.origin,
                "width": self.width, "blocks": list(self.blocks), "summary": self.describe()}


def detect(shapes: Shapes | Iterable[str]) -> Detection | None:
    """The family of a header ({name: shape}), or of bare names (then without sizes)."""
    table = dict(shapes) if isinstance(shapes, Mapping) else {n: () for n in shapes}
    prefixes: dict[str, int] = {}
    bare: dict[str, Sequence[int]] = {}
    for name, shape in table.items():
        prefix, short = split_prefix(name)
        prefixes[prefix] = prefixes.get(prefix, 0) + 1
        bare[short] = shape
    layers = {n.rsplit(".", 1)[0] for n in bare if n.endswith((".weight", ".bias"))} | set(bare)
    prefix = max(prefixes, key=prefixes.get) if prefixes else ""
    for family in FAMILIES:
        rule = family.rule
        key = next((k for k in rule.keys + rule.extra_keys if k in bare or k.rsplit(".", 1)[0] in layers), None)
        if key is not None:
            return _sized(family, key, prefix, bare)
    for family in (f for f in FAMILIES if f.rule.name_prefixes):  # the last resort: a name under a block prefix
        key = next((n for n in sorted(bare) if n.startswith(family.rule.name_prefixes)), None)
        if key is not None:
            return _sized(family, key, prefix, bare)
    return None


def header_shapes(header) -> dict[str, tuple[int, ...]]:
    """{name: shape} of a parsed header (fp8stream.io.header.Header)."""
    return {t.name: tuple(t.shape) for t in header.tensors}


def detect_family(names: Iterable[str]) -> str | None:
    """The family name only (flux, sd3, wan, bert, ...), or None."""
    found = detect(names)
    return found.family if found else None


def _sized(family: Family, key: str, prefix: str, bare: Mapping[str, Sequence[int]]) -> Detection:
    rule = family.rule
    width_shape = bare.get(rule.width_key) or ()
    width = int(width_shape[0]) if width_shape else None
    blocks = tuple(n for n in (count_blocks(bare, p) for p in rule.blocks) if n)
    return Detection(family.name, family.variant_of(bare, width, blocks), key, rule.origin, prefix, width, blocks)
