"""The output layout, computed from the input header and the options alone.

Fixed rules (pipes and byte-for-byte comparisons depend on them): input tensors keep their
data order and bytes, except small rewritten tensors whose output size is fixed here (a
`comfy_quant` marker: FLAG_BYTES more, room for the weight-only flag set or not; the legacy
`scaled_fp8` marker: 0 or 2 elements); renamed tensors (legacy -> comfy) keep their
bytes. After the data comes a tail section: first the tensors we add whose values are known
from the header (markers, unit weight scales), then every activation scale of a calibrated
layer, new or already present, in layer order, because its value depends on weights that may
come later.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Mapping

from fp8stream.errors import InvalidCheckpointError, UsageError
from fp8stream.formats import comfy_quant, legacy
from fp8stream.formats.layers import COMFY, LEGACY, PLAIN, FP8Layer, LayerInventory, take_inventory
from fp8stream.formats.plan_types import FormatOptions, LayerPlan, RewritePlan, Role, TailTensor
from fp8stream.formats.quant_metadata import (
    QUANT_METADATA_KEY,
    QuantMetadata,
    read_quant_metadata,
    synced_quant_metadata,
)
from fp8stream.formats.room import fix_room
from fp8stream.formats.selection import excluded_layers
from fp8stream.io.dtypes import DTYPE_BITS
from fp8stream.io.header import Header, OutputEntry
from fp8stream.names.prefixes import common_model_prefix
from fp8stream.names.suffixes import (
    COMFY_MARKER,
    INPUT_SCALE,
    LEGACY_INPUT_SCALE,
    LEGACY_MARKER,
    LEGACY_WEIGHT_SCALE,
    WEIGHT,
    WEIGHT_SCALE,
)
from fp8stream.version import __version__

METADATA_PREFIX = "fp8stream."
UNIT_SCALE_F32 = b"\x00\x00\x80\x3f"  # 1.0


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
        raise UsageError("--target legacy: converting ComfyUI mixed-precision layers to legacy scaled_fp8 "
                         "is not supported")
    if target != "auto":
        return target
    return LEGACY if LEGACY in flavours else COMFY


def _plan_layer(layer: FP8Layer, out_flavour: str, why_excluded: str | None, options: FormatOptions,
                by_method: bool = False) -> LayerPlan:
    if why_excluded is not None:
        untouched = options.exclude_untouched
        out_flag = layer.weight_only if untouched else True
        return LayerPlan(layer, out_flavour, why_excluded, None, out_flag, untouched,
                         drops_input_scale=by_method and not untouched)
    if not options.keep_weight_only:
        out_flag: bool | None = False
    else:
        out_flag = layer.weight_only  # None for markers only the stream can read
    suffix = LEGACY_INPUT_SCALE if out_flavour == LEGACY else INPUT_SCALE
    return LayerPlan(layer, out_flavour, None, layer.name + suffix, out_flag)


def _refuse_legacy_exclusions(names: list[str]) -> None:
    """Layers the user excludes in a file written as legacy scaled_fp8, which cannot flag one layer."""
    if names:
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise UsageError(
            f"cannot exclude {names[0]}{more}: the legacy scaled_fp8 format has no per-layer weight-only flag; "
            "add --target comfy to write ComfyUI's current format, which has one"
        )


def _comfy_marker_bytes(weight_only: bool) -> bytes:
    doc: dict = {"format": comfy_quant.TENSORWISE_FP8}
    if weight_only:
        doc[comfy_quant.WEIGHT_ONLY_FLAG] = True
    return comfy_quant.encode_doc(doc)


def plan_layers(inventory: LayerInventory, options: FormatOptions, method_weight_only: Mapping[str, str],
                scaled_weight_only: Mapping[str, str] | None = None) -> list[LayerPlan]:
    """What happens to every FP8 layer of the whole model (every shard). `method_weight_only`:
    layers the calibration method will not scale (MethodPlan.weight_only), kept weight-only;
    `scaled_weight_only`: layers it scales and keeps weight-only (MethodPlan.scaled_weight_only).
    A layer written as legacy scaled_fp8 cannot be flagged alone: one the method keeps
    weight-only with its scale runs FP8 with that scale; one it gives no scale makes the whole
    file weight-only, through its marker (no layer scaled: no guess either way)."""
    file_flavour = _file_flavour(inventory, options.target)
    flavours = {layer.name: _out_flavour(layer, file_flavour) for layer in inventory.layers}
    chosen = excluded_layers(list(flavours), sorted(inventory.names), options.selection)
    _refuse_legacy_exclusions([name for name in chosen if flavours[name] == LEGACY])
    whole = _legacy_weight_only(flavours, method_weight_only)
    flagged = scaled_weight_only or {}
    plans = []
    for layer in inventory.layers:
        name, flavour = layer.name, flavours[layer.name]
        if name in chosen:
            plans.append(_plan_layer(layer, flavour, chosen[name], options))
        elif name in method_weight_only:
            plans.append(_plan_layer(layer, flavour, f"method: {method_weight_only[name]}", options, by_method=True))
        elif whole and flavour == LEGACY:
            plans.append(_plan_layer(layer, flavour, whole, options))
        elif name in flagged and flavour != LEGACY:
            plans.append(replace(_plan_layer(layer, flavour, None, options), out_weight_only=True,
                                 weight_only_why=flagged[name]))
        else:
            plans.append(_plan_layer(layer, flavour, None, options))
    return plans


def _legacy_weight_only(flavours: Mapping[str, str], method_weight_only: Mapping[str, str]) -> str | None:
    """Why every layer written as legacy is kept weight-only (None: they are not): the method
    gives some of them no scale, and the format cannot flag those alone."""
    unscaled = [name for name in method_weight_only if flavours.get(name) == LEGACY]
    if not unscaled:
        return None
    more = f" and {len(unscaled) - 1} more" if len(unscaled) > 1 else ""
    return (f"the legacy scaled_fp8 format has no per-layer weight-only flag and {unscaled[0]}{more} get no scale "
            "without a guess: the whole file is kept weight-only through its scaled_fp8 marker")


def _tensor_roles(plan: RewritePlan, p: LayerPlan, header: Header) -> None:
    """Roles and names of the layer's tensors that this file holds (a layer's tensors may be
    split over shards: each shard handles those it holds)."""
    layer, has = p.layer, header.by_name
    if p.calibrated:
        if layer.weight_scale in has:
            plan.scalar_keys.add(layer.weight_scale)
        if layer.existing_input_scale in has:
            plan.roles[layer.existing_input_scale] = Role.MOVED_SCALE
            plan.scalar_keys.add(layer.existing_input_scale)
    if p.drops_input_scale and layer.existing_input_scale in has:
        plan.roles[layer.existing_input_scale] = Role.DROP
    if p.untouched and not (layer.flavour == LEGACY and p.out_flavour == COMFY):
        return  # a legacy layer converted to comfy keeps its behaviour, not its keys
    if layer.flavour == COMFY and layer.marker in has:
        plan.roles[layer.marker] = Role.MARKER
        plan.plan_by_marker[layer.marker] = p
        plan.out_sizes[layer.marker] = comfy_quant.marker_size(has[layer.marker].nbytes)
    elif layer.flavour == LEGACY and p.out_flavour == COMFY:
        if layer.weight_scale in has:
            plan.out_names[layer.weight_scale] = layer.name + WEIGHT_SCALE
        if layer.existing_input_scale in has and not p.calibrated and not p.drops_input_scale:
            plan.out_names[layer.existing_input_scale] = layer.name + INPUT_SCALE


def _layer_tail(p: LayerPlan, meta: QuantMetadata | None, meta_docs: dict[str, dict]) -> list[TailTensor]:
    """Tensors added for a layer whose weight this file holds (its scale is added by the caller)."""
    layer = p.layer
    if p.untouched and not (layer.flavour == LEGACY and p.out_flavour == COMFY):
        return []
    if layer.flavour == COMFY:
        if meta is not None and p.out_weight_only is not None:
            doc = meta.layer_doc(layer.name)
            if doc is not None:
                meta_docs[layer.name] = comfy_quant.with_weight_only(doc, p.out_weight_only)
        return []
    added = []
    if p.out_flavour == COMFY:  # legacy or plain layer converted to ComfyUI's format
        raw = _comfy_marker_bytes(bool(p.out_weight_only))  # legacy and plain flags are header-known
        if layer.flavour != LEGACY:
            added.append(TailTensor(layer.name + WEIGHT_SCALE, "F32", (), UNIT_SCALE_F32))
        added.append(TailTensor(layer.name + COMFY_MARKER, "U8", (len(raw),), raw))
        if meta is not None:
            meta_docs[layer.name] = json.loads(raw)
    elif layer.flavour == PLAIN:  # plain layer written as legacy
        added.append(TailTensor(layer.name + LEGACY_WEIGHT_SCALE, "F32", (), UNIT_SCALE_F32))
    return added


def _legacy_marker(plan: RewritePlan, all_plans: list[LayerPlan], inventory: LayerInventory, file_flavour: str,
                   keep_weight_only: bool) -> TailTensor | None:
    """The top-level scaled_fp8 marker: kept, cut, dropped, or added once (in the first layer's file)."""
    marker, header = inventory.legacy_marker, plan.header
    # every layer written as legacy kept weight-only (plan_layers refuses a user's exclusion there)
    whole = any(p.out_flavour == LEGACY and not p.calibrated for p in all_plans)
    if marker is not None and marker.name in header and LEGACY in inventory.flavours:
        if file_flavour != LEGACY:
            plan.roles[marker.name] = Role.DROP
            return None
        plan.roles[marker.name] = Role.LEGACY_MARKER
        weight_only = whole or (keep_weight_only and legacy.marker_is_weight_only(marker))
        plan.out_sizes[marker.name] = legacy.marker_shape(weight_only)[0] * DTYPE_BITS[marker.dtype] // 8
        return None
    if marker is None and file_flavour == LEGACY and all_plans and all_plans[0].layer.weight.name in header \
            and any(p.layer.flavour == PLAIN for p in all_plans):
        prefix = common_model_prefix([p.layer.name for p in all_plans])
        shape = legacy.marker_shape(whole)
        return TailTensor(prefix + LEGACY_MARKER, "F8_E4M3", shape, bytes(shape[0]))
    return None


def build_plan(header: Header, calibration: dict[str, object], options: FormatOptions | None = None,
               whole: Header | None = None, method_weight_only: Mapping[str, str] | None = None,
               scaled_weight_only: Mapping[str, str] | None = None,
               room: tuple[int, bool] | None = None) -> RewritePlan:
    """Plan every output tensor of one file from the header; `calibration` is recorded in the metadata.

    `whole`: for one shard of a sharded checkpoint, the merged header of every shard (flavours,
    presets and groups are decided on the whole model; the plan covers this shard's tensors, and
    each layer's scale goes into the shard that holds its weight). The header's room and whether
    the data's places are fixed come from the header and the options alone (formats/room.py), so
    `room` (header_room, data_fixed) from the plan made before the method's choice is not worked out again."""
    options = options or FormatOptions()
    inventory = take_inventory(whole if whole is not None else header)
    plan = _layout(header, inventory, calibration, options, method_weight_only or {}, scaled_weight_only)
    if room is not None:
        plan.header_room, plan.data_fixed = room
        return plan
    every = {p.layer.name: "" for p in plan_layers(inventory, options, {}) if p.calibrated}
    none = plan if not method_weight_only and not scaled_weight_only else \
        _layout(header, inventory, calibration, options, {}, None)
    fix_room(plan, none, _layout(header, inventory, calibration, options, every, None))
    return plan


def _layout(header: Header, inventory: LayerInventory, calibration: dict[str, object], options: FormatOptions,
            method_weight_only: Mapping[str, str], scaled_weight_only: Mapping[str, str] | None) -> RewritePlan:
    all_plans = plan_layers(inventory, options, method_weight_only, scaled_weight_only)
    plans = [p for p in all_plans if p.layer.weight.name in header]
    own = LayerInventory([p.layer for p in plans], [s for s in inventory.skipped if s.name + WEIGHT in header],
                         inventory.legacy_marker, inventory.quant_metadata, inventory.names)
    plan = RewritePlan(header, own, plans, [], None, {t.name: Role.PASS for t in header.tensors},
                       {t.name: t.name for t in header.tensors}, {}, [])
    own_meta = read_quant_metadata(header.metadata)
    meta_docs: dict[str, dict] = {}
    added: list[TailTensor] = []
    for p in all_plans:
        _tensor_roles(plan, p, header)
    for p in plans:
        if p.calibrated:
            plan.layer_by_weight[p.layer.weight.name] = p.layer
        added += _layer_tail(p, inventory.quant_metadata, meta_docs)
    marker = _legacy_marker(plan, all_plans, inventory, _file_flavour(inventory, options.target),
                            options.keep_weight_only)
    plan.tail = ([marker] if marker else []) + added + [TailTensor(p.scale_key, "F32", (), scale_of=p.layer.name)
                                                        for p in plans if p.calibrated]
    plan.entries = _entries(plan)
    plan.metadata = output_metadata(header, calibration)
    if meta_docs and own_meta is not None:
        plan.metadata[QUANT_METADATA_KEY] = synced_quant_metadata(own_meta, meta_docs)
    return plan


def _entries(plan: RewritePlan) -> list[OutputEntry]:
    entries = []
    for t in plan.header.tensors:
        role = plan.roles[t.name]
        if role in (Role.MOVED_SCALE, Role.DROP):
            continue
        if role is Role.LEGACY_MARKER:
            n = plan.out_sizes[t.name]
            entries.append(OutputEntry(t.name, t.dtype, legacy.marker_shape(n > 0), n))
            continue
        entries.append(OutputEntry(plan.out_names[t.name], t.dtype, t.shape if role is Role.PASS else
                                   (plan.out_sizes[t.name],), plan.out_sizes.get(t.name, t.nbytes)))
    entries += [OutputEntry(t.name, t.dtype, t.shape, 4 if t.scale_of is not None else len(t.data))
                for t in plan.tail]  # a scale: one F32
    _refuse_duplicate_outputs(entries)
    return entries


def _refuse_duplicate_outputs(entries: list[OutputEntry]) -> None:
    """A tensor we would add that the file already holds under a role we did not recognise (found
    by fuzzing: a plain FP8 weight beside a BF16 `input_scale`) is refused, not written twice."""
    seen: set[str] = set()
    for e in entries:
        if e.name in seen:
            raise InvalidCheckpointError(f"tensor {e.name!r} is in the file, but not as this tool would write it "
                                         "(dtype or flavour); refusing to guess")
        seen.add(e.name)
