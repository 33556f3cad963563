"""A model family, declared: how it is recognised from a header, the variants its shapes name, the
layers its preset keeps in high precision, the layers that read one input and its text layers, its
real-size inventories, the bound's producer graph and the forward pass's model code.

Plain data (torch-free: the model code imports torch and diffusers inside its functions): each
module of this package makes one `Family`, the registry (families/__init__.py) lists them in
detection order and every other part of the tool asks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from fp8stream.families.graph_types import ProducerGraph
from fp8stream.families.spec import TensorSpec

if TYPE_CHECKING:
    from fp8stream.families.samples import SamplePlan

Shapes = Mapping[str, Sequence[int]]
# (bare names -> shapes, model width, block counts) -> the named model the shapes fit
Variant = Callable[[Shapes, "int | None", "tuple[int, ...]"], str]
# (blocks deep, None: the real depth) -> the tensors of a real-size model
Inventory = Callable[["int | None"], "list[TensorSpec]"]


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
class SharedInput:
    """Sibling layers under one parent module that read the same input tensor: loaders that fuse them
    into one matmul use one scale for all, so they share the max of their own (formats/groups.py)."""

    parent: str  # regular expression the bare parent path must match
    leaves: tuple[str, ...]  # the siblings' last name parts


@dataclass(frozen=True)
class ModelCode:
    """What the forward pass runs for a family (torch and diffusers are imported inside each)."""

    config: Callable[[Shapes], dict]  # the diffusers config from tensor shapes (bare names, no hub access)
    model_class: Callable[[], Any]  # the diffusers / transformers class
    # checkpoint names -> diffusers names (the row-id mapping runs it once on a stand-in)
    convert: Callable[[dict, Mapping], dict]
    # the forward's keyword arguments for a batch of synthetic samples, in the family's timestep convention
    inputs: Callable[[Mapping, "SamplePlan"], dict]
    # attention output projections -> the value projections their input mixes (the attention-mix estimate)
    value_sources: Callable[[Mapping], "dict[str, list[list[str]]]"]


@dataclass(frozen=True)
class Family:
    name: str  # our name: `--preset`, the report, the producer graph and the forward pass use it
    kind: str  # "dit" (a diffusion transformer) or "text" (a text encoder)
    rule: DetectionRule
    variant: Variant | None = None  # None: the family's name is the variant
    # `--preset NAME`: (glob on the bare layer name, why) of the layers kept in high precision
    presets: tuple[tuple[str, str], ...] = ()
    edge_blocks: str = ""  # regex, block number as group 1: the preset keeps the first and last blocks too
    shared_inputs: tuple[SharedInput, ...] = ()  # siblings of this family only (generic ones: formats/groups.py)
    cross_attention: tuple[str, ...] = ()  # module names whose q reads another stream than their k and v
    layer_pattern: str = ""  # regex searched in a full layer name: a layer of this text encoder
    layer_names: tuple[str, ...] = ()  # bare layer names of this text encoder that the pattern misses
    # (bench key, builder): real-size inventories, full width, for scripts/bench.py --arch and the tests
    inventories: tuple[tuple[str, Inventory], ...] = ()
    graph: ProducerGraph | None = None  # the bound's producer graph (methods/simulate/graph.py); None: not known
    model: ModelCode | None = None  # the forward pass's model code; None: it has none for this family
    # (diffusers module, checkpoint layer; {}: block index) for stats matching, by scripts/derive_renames.py
    diffusers_renames: tuple[tuple[str, str], ...] = ()

    def variant_of(self, bare: Shapes, width: int | None, blocks: tuple[int, ...]) -> str:
        return self.variant(bare, width, blocks) if self.variant is not None else self.name


def holds(bare: Shapes, key: str) -> bool:
    """A tensor the file holds, or a layer of that name (callers that know only layer names)."""
    return key in bare or key.rsplit(".", 1)[0] in bare


def count_blocks(names: Iterable[str], prefix: str) -> int:
    """How many `prefix.N.` blocks the names hold (highest N + 1)."""
    found = [int(part) for k in names if k.startswith(prefix)
             for part in (k[len(prefix):].split(".", 1)[0],) if part.isdigit()]
    return max(found) + 1 if found else 0
