"""A model family, declared: how it is recognised from a header and the variants its shapes name.

Plain data (torch-free): each module of this package makes one `Family`, the registry
(families/__init__.py) lists them in detection order and every other part of the tool asks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

Shapes = Mapping[str, Sequence[int]]
# (bare names -> shapes, model width, block counts) -> the named model the shapes fit
Variant = Callable[[Shapes, "int | None", "tuple[int, ...]"], str]


@dataclass(frozen=True)
class DetectionRule:
    """The detection keys of a family (bare names: the model prefix removed). Where diffusers has a
    test (`CHECKPOINT_KEY_NAMES`, diffusers/loaders/single_file_utils.py, 0.42) its keys are copied
    with the `model.diffusion_model.` duplicates dropped, in the order diffusers tries them."""

    keys: tuple[str, ...]  # any one present -> this family
    origin: str  # where the keys come from: diffusers' CHECKPOINT_KEY_NAMES entry, or "ours"
    width_key: str = ""  # a tensor whose first dimension is the model width (for the report and variants)
    blocks: tuple[str, ...] = ()  # block-list prefixes, counted for the report ("19+38 blocks")
    extra_keys: tuple[str, ...] = ()  # ours, tried after the diffusers keys (layer names some callers hold)
    # ours, the last resort once no family's key is present: any name under one of these prefixes
    # (a partial list of layers, e.g. a graph built for a few Flux layers)
    name_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    name: str  # our name: `--preset`, the report, the producer graph and the forward pass use it
    kind: str  # "dit" (a diffusion transformer) or "text" (a text encoder)
    rule: DetectionRule
    variant: Variant | None = None  # None: the family's name is the variant

    def variant_of(self, bare: Shapes, width: int | None, blocks: tuple[int, ...]) -> str:
        return self.variant(bare, width, blocks) if self.variant is not None else self.name


def holds(bare: Shapes, key: str) -> bool:
    """A tensor the file holds, or a layer of that name (callers that know only layer names)."""
    return key in bare or key.rsplit(".", 1)[0] in bare
