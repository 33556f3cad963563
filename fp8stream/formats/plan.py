"""The output layout, computed from the input header and the options alone.

Fixed rules (pipes and byte-for-byte comparisons depend on them): input tensors keep their
data order and bytes, except small rewritten tensors whose output size is fixed here (a
`comfy_quant` marker: same size, or FLAG_BYTES more when the weight-only flag is set; the
legacy `scaled_fp8` marker: 0 or 2 elements); renamed tensors (legacy -> comfy) keep their
bytes. After the data comes a tail section: first the tensors we add whose values are known
from the header (markers, unit weight scales), then every activation scale of a calibrated
layer, new or already present, in layer order, because its value depends on weights that may
come later.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

from fp8stream import __version__
from fp8stream.errors import InvalidCheckpointError, UsageError
from fp8stream.formats import comfy_quant, legacy
from fp8stream.formats.groups import shared_scale_groups
from fp8stream.formats.layers import COMFY, LEGACY, PLAIN, FP8Layer, LayerInventory, SkippedLayer, take_inventory
from fp8stream.formats.prefixes import common_model_prefix
from fp8stream.formats.quant_metadata import METADATA_KEY, read_quant_metadata, synced_quant_metadata
from fp8stream.formats.selection import Selection, excluded_layers
from fp8stream.io.dtypes import DTYPE_BITS
from fp8stream.io.header import Header, OutputEntry

METADATA_PREFIX = "fp8stream."
TARGETS = ("auto", "comfy", "legacy")
UNIT_SCALE_F32 = b"\x00\x00\x80\x3f"  # 1.0


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
    groups: list[list[str]]  # calibrated layers that share one scale
    # Input tensors whose values the calibration needs (weight scales, existing input scales).
    scalar_keys: set[str] = field(default_factory=set)
    layer_by_weight: dict[str, FP8Layer] = field(default_factory=dict)
    whole_layers: dict[str, FP8Layer] = field(default_factory=dict)
    plan_by_marker: dict[str, LayerPlan] = field(default_factory=dict)

    @property
    def layers(self) -> list[FP8Layer]:
        """The calibrated layers, in layer order."""
        return [p.layer for p in self.layer_plans if p.calibrated]

    def inventory_layer(self, name: str) -> FP8Layer:
        """A layer of the whole model (other shards included), by name."""
        return self.whole_layers[name]

    @property
    def skipped(self) -> list[SkippedLayer]:
        return self.inventory.skipped

    @property
    def excluded(self) -> list[LayerPlan]:
        return [p for p in self.layer_plans if not p.calibrated]

    @property
    def output_bytes(self) -> int:
        from fp8stream.io.header import encode_header

        blob, infos = encode_header(self.entries, self.metadata)
        return len(blob) + (infos[-1].end if infos else 0)


def output_metadata(header: Header, calibration: dict[str, object]) -> dict[str, str]:
    """Input metadata plus what decides our values; nothing that varies between runs."""
    metadata = dict(header.metadata or {})
    for key in [k for k in metadata if k.startswith(METADATA_PREFIX)]:
        del metadata[key]  # a second run describes itself, not the first
    metadata[METADATA_PREFIX + "version"] = __version__
    metadata[METADATA_PREFIX + "calibration"] = json.dumps(calibration, sort_keys=True, separators=(",", ":"))
    return metadata


def _out_flavour(layer: FP8Layer, file_flavour: str) -> str:
    if layer.flavour == PLAIN:
        return file_flavour
    return COMFY if file_flavour == COMFY else layer.flavour


def _file_flavour(inventory: LayerInventory, target: str) -> str:
    flavours = inventory.flavours
    if target == "legacy" and COMFY in flavours:
        raise UsageError("--target legacy: converting ComfyUI mixed-precision layers to legacy scaled_fp8 is not supported")
    if target != "auto":
        return target
    return LEGACY if LEGACY in flavours else COMFY


def _plan_layer(layer: FP8Layer, out_flavour: str, why_excluded: str | None, options: FormatOptions) -> LayerPlan:
    if why_excluded is not None:
        untouched = options.exclude_untouched
        out_flag = layer.weight_only if untouched else True
        return LayerPlan(layer, out_flavour, why_excluded, None, out_flag, untouched)
    if not options.keep_weight_only:
        out_flag: bool | None = False
    else:
        out_flag = layer.weight_only  # None for markers only the stream can read
    key = legacy.INPUT_SCALE if out_flavour == LEGACY else "input_scale"
    return LayerPlan(layer, out_flavour, None, f"{layer.name}.{key}", out_flag)


def _refuse_legacy_exclusions(plans: list[LayerPlan]) -> None:
    bad = [p.layer.name for p in plans if p.out_flavour == LEGACY and not p.calibrated]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise UsageError(
            f"cannot exclude {bad[0]}{more}: the legacy scaled_fp8 format has no per-layer weight-only flag "
            "(use --target comfy to convert the file to ComfyUI's current format)"
        )


def _comfy_marker_bytes(weight_only: bool) -> bytes:
    doc: dict = {"format": comfy_quant.TENSORWISE_FP8}
    if weight_only:
        doc[comfy_quant.WEIGHT_ONLY_FLAG] = True
    return comfy_quant.encode_doc(doc)


_COMPANIONS = (".weight_scale", ".comfy_quant", ".input_scale", ".scale_weight", ".scale_input")


def _own_part(whole: LayerInventory, header: Header) -> LayerInventory:
    """The part of a whole (sharded) checkpoint's inventory whose weights live in `header`."""
    layers = [layer for layer in whole.layers if layer.weight.name in header]
    for layer in layers:
        for suffix in _COMPANIONS:
            key = layer.name + suffix
            if key not in header and key in whole.names:
                raise InvalidCheckpointError(
                    f"layer {layer.name}: {key} is in another shard than its weight; split layers are not supported")
    skipped = [s for s in whole.skipped if f"{s.name}.weight" in header]
    return LayerInventory(layers, skipped, whole.legacy_marker, whole.quant_metadata, whole.names)


def build_plan(header: Header, calibration: dict[str, object], options: FormatOptions | None = None,
               whole: Header | None = None) -> RewritePlan:
    """Plan every output tensor from the header; `calibration` is recorded in the metadata.

    `whole`: for one shard of a sharded checkpoint, the merged header of every shard (flavours,
    presets and groups are decided on the whole model; the plan covers this shard's tensors)."""
    options = options or FormatOptions()
    whole_inventory = take_inventory(whole if whole is not None else header)
    inventory = _own_part(whole_inventory, header) if whole is not None else whole_inventory
    file_flavour = _file_flavour(whole_inventory, options.target)
    names = [layer.name for layer in whole_inventory.layers]
    excluded = excluded_layers(names, sorted(whole_inventory.names), options.selection)
    all_plans = [_plan_layer(layer, _out_flavour(layer, file_flavour), excluded.get(layer.name), options)
                 for layer in whole_inventory.layers]
    _refuse_legacy_exclusions(all_plans)
    own = {layer.name for layer in inventory.layers}
    plans = [p for p in all_plans if p.layer.name in own]

    roles = {t.name: Role.PASS for t in header.tensors}
    out_names = {t.name: t.name for t in header.tensors}
    out_sizes: dict[str, int] = {}
    plan = RewritePlan(header, inventory, plans, [], None, roles, out_names, out_sizes, [], [])
    plan.whole_layers = {layer.name: layer for layer in whole_inventory.layers}
    added: list[TailTensor] = []
    scales: list[TailTensor] = []
    meta_docs: dict[str, dict] = {}
    legacy_weight_only = options.keep_weight_only and inventory.legacy_marker is not None and \
        legacy.marker_is_weight_only(inventory.legacy_marker)
    for p in plans:
        layer = p.layer
        if p.calibrated:
            plan.layer_by_weight[layer.weight.name] = layer
            if layer.weight_scale:
                plan.scalar_keys.add(layer.weight_scale)
            if layer.existing_input_scale:
                roles[layer.existing_input_scale] = Role.MOVED_SCALE
                plan.scalar_keys.add(layer.existing_input_scale)
            scales.append(TailTensor(p.scale_key, "F32", (), scale_of=layer.name))
        if p.untouched and not (layer.flavour == LEGACY and p.out_flavour == COMFY):
            continue  # a legacy layer converted to comfy keeps its behaviour, not its keys
        if layer.flavour == COMFY:
            if layer.marker:
                roles[layer.marker] = Role.MARKER
                plan.plan_by_marker[layer.marker] = p
                marker_info = header.get(layer.marker)
                out_sizes[layer.marker] = comfy_quant.marker_size(marker_info.nbytes, sets_flag=p.out_weight_only is True)
            if inventory.quant_metadata is not None and p.out_weight_only is not None:
                doc = inventory.quant_metadata.layer_doc(layer.name)
                if doc is not None:
                    meta_docs[layer.name] = comfy_quant.with_weight_only(doc, p.out_weight_only)
        elif p.out_flavour == COMFY:  # legacy or plain layer converted to ComfyUI's format
            raw = _comfy_marker_bytes(bool(p.out_weight_only))  # legacy and plain flags are header-known
            if layer.flavour == LEGACY:
                out_names[layer.weight_scale] = f"{layer.name}.weight_scale"
                if layer.existing_input_scale and not p.calibrated:
                    out_names[layer.existing_input_scale] = f"{layer.name}.input_scale"
            else:
                added.append(TailTensor(f"{layer.name}.weight_scale", "F32", (), UNIT_SCALE_F32))
            added.append(TailTensor(f"{layer.name}.comfy_quant", "U8", (len(raw),), raw))
            if inventory.quant_metadata is not None:
                meta_docs[layer.name] = json.loads(raw)
        elif layer.flavour == PLAIN:  # plain layer written as legacy
            added.append(TailTensor(f"{layer.name}.{legacy.WEIGHT_SCALE}", "F32", (), UNIT_SCALE_F32))

    marker = inventory.legacy_marker
    if marker is not None and marker.name not in header:
        pass  # another shard holds it
    elif marker is not None and (LEGACY in whole_inventory.flavours):
        if file_flavour == LEGACY:
            roles[marker.name] = Role.LEGACY_MARKER
            out_sizes[marker.name] = legacy.marker_shape(legacy_weight_only)[0] * DTYPE_BITS[marker.dtype] // 8
        else:
            roles[marker.name] = Role.DROP
    elif file_flavour == LEGACY and marker is None and all_plans and all_plans[0] in plans and \
            any(p.layer.flavour == PLAIN for p in all_plans):  # once, in the shard of the first layer
        prefix = common_model_prefix([p.layer.name for p in all_plans])
        added.insert(0, TailTensor(prefix + legacy.MARKER_NAME, "F8_E4M3", legacy.marker_shape(False), b""))

    plan.tail = added + scales
    plan.groups = [g for g in shared_scale_groups([p.layer.name for p in all_plans if p.calibrated])
                   if any(name in own for name in g)]  # members may live in other shards
    for t in header.tensors:
        role = roles[t.name]
        if role in (Role.MOVED_SCALE, Role.DROP):
            continue
        if role is Role.LEGACY_MARKER:
            n = out_sizes[t.name]
            plan.entries.append(OutputEntry(t.name, t.dtype, legacy.marker_shape(n > 0), n))
            continue
        plan.entries.append(OutputEntry(out_names[t.name], t.dtype, t.shape if role is Role.PASS else
                                        (out_sizes[t.name],), out_sizes.get(t.name, t.nbytes)))
    plan.entries += [OutputEntry(t.name, t.dtype, t.shape, _tail_nbytes(t)) for t in plan.tail]
    _refuse_duplicate_outputs(plan.entries)
    plan.metadata = output_metadata(header, calibration)
    own_meta = read_quant_metadata(header.metadata)
    if meta_docs and own_meta is not None:
        plan.metadata[METADATA_KEY] = synced_quant_metadata(own_meta, meta_docs)
    return plan


def _refuse_duplicate_outputs(entries: list[OutputEntry]) -> None:
    """A tensor we would add that the file already holds under a role we did not recognise (found
    by fuzzing: a plain FP8 weight beside a BF16 `input_scale`) is refused, not written twice."""
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise InvalidCheckpointError(f"tensor {e.name!r} is in the file, but not as this tool would write it "
                                         "(dtype or flavour); refusing to guess")
        seen.add(e.name)


def _tail_nbytes(t: TailTensor) -> int:
    return 4 if t.scale_of is not None else len(t.data)
