"""The plan's data: what happens to each layer and tensor of one output file (made by plan.py)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from fp8stream.formats.layers import FP8Layer, LayerInventory, SkippedLayer
from fp8stream.formats.selection import Selection
from fp8stream.io.header import Header, OutputEntry


class Role(enum.Enum):
    PASS = "pass"  # copied byte for byte (maybe under a new name)
    MARKER = "marker"  # comfy_quant JSON, rewritten at a size fixed by the plan
    MOVED_SCALE = "moved_scale"  # an existing input scale: its value is read, it is written in the tail
    LEGACY_MARKER = "legacy_marker"  # scaled_fp8: cut to 0 or kept at 2 elements
    DROP = "drop"  # read and not written (legacy marker when converting to comfy)


@dataclass(frozen=True)
class FormatOptions:
    """Every option that changes the output's layout or markers."""

    keep_weight_only: bool = False
    target: str = "auto"  # auto: the file's own flavour (comfy for plain fp8)
    selection: Selection = field(default_factory=Selection)
    exclude_untouched: bool = False


@dataclass
class LayerPlan:
    """What happens to one FP8 layer."""

    layer: FP8Layer
    out_flavour: str  # comfy or legacy
    excluded: str | None  # why it gets no scale, None when calibrated
    scale_key: str | None  # output key of its activation scale (None when excluded)
    # The weight-only flag written; None: decided when the marker bytes arrive (keep the input's
    # with --keep-weight-only, else removed).
    out_weight_only: bool | None
    untouched: bool = False  # excluded with --exclude-untouched: every tensor as it was
    # why a calibrated layer is written weight-only all the same (its scale beside the flag)
    weight_only_why: str | None = None
    # an existing input scale is not written: the method gives the layer none, so one in the file
    # is a placeholder a runtime that reads the scale and not the flag would use
    drops_input_scale: bool = False

    @property
    def calibrated(self) -> bool:
        return self.excluded is None


@dataclass
class TailTensor:
    """A tensor written after the data: fixed bytes, or the scale of layer `scale_of`."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes | None = None
    scale_of: str | None = None


@dataclass
class RewritePlan:
    header: Header
    inventory: LayerInventory
    layer_plans: list[LayerPlan]
    entries: list[OutputEntry]
    metadata: dict[str, str] | None
    roles: dict[str, Role]
    out_names: dict[str, str]  # input tensor name -> output name (renames; PASS and MARKER)
    out_sizes: dict[str, int]  # rewritten tensors' output sizes
    tail: list[TailTensor]
    # Input tensors whose values the calibration needs (weight scales, existing input scales).
    scalar_keys: set[str] = field(default_factory=set)
    layer_by_weight: dict[str, FP8Layer] = field(default_factory=dict)
    plan_by_marker: dict[str, LayerPlan] = field(default_factory=dict)
    # the JSON header is padded to this many bytes, room for any weight-only choice (formats/room.py)
    header_room: int = 0
    # every data tensor's place is the same whatever the method keeps weight-only (False: a legacy
    # scaled_fp8 marker in the data whose size the choice decides)
    data_fixed: bool = False

    @property
    def layers(self) -> list[FP8Layer]:
        """The calibrated layers, in layer order."""
        return [p.layer for p in self.layer_plans if p.calibrated]

    @property
    def skipped(self) -> list[SkippedLayer]:
        return self.inventory.skipped

    @property
    def excluded(self) -> list[LayerPlan]:
        return [p for p in self.layer_plans if not p.calibrated]

    @property
    def data_entries(self) -> list[OutputEntry]:
        """The output's tensors before the tail (input tensors, as written)."""
        return self.entries[:len(self.entries) - len(self.tail)]

    @property
    def output_bytes(self) -> int:
        from fp8stream.io.header import encode_header

        blob, infos = encode_header(self.entries, self.metadata, self.header_room)
        return len(blob) + (infos[-1].end if infos else 0)
