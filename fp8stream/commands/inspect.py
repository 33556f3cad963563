"""`fp8stream inspect PATH`: what a checkpoint holds and what ComfyUI will do with each FP8 layer.

Per layer: the flavour, the weight-only flag, and the input scale with its value and whether it
is a placeholder (1.0 or equal to weight_scale: what converters write, see docs/comfyui.md).
Reads the header(s) and the few small tensors (scales, markers); a plain file by positioned
reads, a zstd file decompressed once, a sharded model shard by shard.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict

import click

from fp8stream.commands.common import EXIT_CODES, run_guarded
from fp8stream.commands.inspect_read import Checkpoint, read_checkpoint
from fp8stream.families.detect import detect, header_shapes
from fp8stream.formats.comfy_runtime import NO_SCALE, flagged_weight_only, layer_run
from fp8stream.formats.existing_scales import judge_existing_scale
from fp8stream.formats.layers import FP8Layer, take_inventory
from fp8stream.formats.quant_metadata import QuantMetadata
from fp8stream.io.dtypes import decode_values
from fp8stream.report import LayerCounts, human_size, plural


def _scalar(ckpt: Checkpoint, name: str | None) -> float | None:
    """One value of a small float tensor (F32, F16, BF16: read without numpy), or None when absent
    or not one value."""
    raw = ckpt.small.get(name) if name else None
    try:
        values = decode_values(raw, ckpt.header.by_name[name].dtype) if raw is not None else []
    except ValueError:
        return None
    return values[0] if len(values) == 1 else None


def _layer(ckpt: Checkpoint, layer: FP8Layer, quant_metadata: QuantMetadata | None) -> dict:
    weight_scale = _scalar(ckpt, layer.weight_scale) if layer.weight_scale else 1.0
    weight_only = flagged_weight_only(layer, lambda name: ckpt.small.get(name, b""))
    value = _scalar(ckpt, layer.existing_input_scale)
    run = layer_run(layer, ckpt.header, ckpt.small, quant_metadata)  # how ComfyUI runs it: check's rule
    placeholder, why = None, NO_SCALE
    if layer.existing_input_scale is not None:
        _, why = judge_existing_scale(None if value is None else [value], weight_scale or 1.0,
                                      bool(weight_only), overwrite=False)
        placeholder = value is not None and value in (1.0, weight_scale)
    return {
        "name": layer.name,
        "flavour": layer.flavour,
        "shape": list(layer.weight.shape),
        "weight_scale": layer.weight_scale is not None,
        "weight_scale_value": weight_scale,
        "input_scale": layer.existing_input_scale is not None,
        "input_scale_value": value,
        "input_scale_placeholder": placeholder,
        "input_scale_why": why,
        "weight_only": weight_only,
        # as calibrate's report counts it: ComfyUI's text encoder loader runs FP8 layers weight-only
        "fp8_activations": None if weight_only is None else not weight_only and not layer.text_encoder,
        # where ComfyUI stops with an error on the layer (formats/comfy_runtime.py), why; else null
        "comfyui_stops": run.why if run.stops else None,
    }


def describe(path: str) -> dict:
    """The checkpoint's summary as plain data (JSON-safe: null where a value is unknown)."""
    ckpt = read_checkpoint(path)
    header = ckpt.header
    inventory = take_inventory(header)
    dtype_bytes: Counter[str] = Counter()
    dtype_count: Counter[str] = Counter()
    for t in header.tensors:
        dtype_bytes[t.dtype] += t.nbytes
        dtype_count[t.dtype] += 1
    family = detect(header_shapes(header))
    layers = [_layer(ckpt, layer, inventory.quant_metadata) for layer in inventory.layers]
    return {
        "path": path,
        "family": family.to_json() if family else None,
        "bytes": ckpt.file_bytes,
        "shards": ckpt.shards,
        "compressed": ckpt.compressed,
        "tensors": len(header.tensors),
        "largest_tensor_bytes": max((t.nbytes for t in header.tensors), default=0),
        "dtypes": {d: {"tensors": dtype_count[d], "bytes": dtype_bytes[d]} for d in sorted(dtype_count)},
        "metadata_keys": sorted((header.metadata or {}).keys()),
        "fp8_layers": layers,
        "counts": asdict(LayerCounts.of([layer["fp8_activations"] for layer in layers])),
        "skipped": [{"name": s.name, "reason": s.reason} for s in inventory.skipped],
    }


def _scale_text(layer: dict) -> str:
    if layer["input_scale_value"] is None:
        return "input_scale -" if not layer["input_scale"] else "input_scale unreadable"
    kind = "placeholder" if layer["input_scale_placeholder"] else "calibrated"
    if layer["weight_only"]:
        kind += ", unused: weight-only"
    return f"input_scale {layer['input_scale_value']:.6g} ({kind})"


def _family_text(family: dict | None) -> str:
    if family is None:
        return "not recognised (no preset, no forward pass: calibrate keeps its layers weight-only)"
    return family["summary"]


def render(info: dict) -> str:
    where = f", {info['shards']} shards" if info["shards"] > 1 else ""
    where += ", zstd" if info["compressed"] else ""
    lines = [f"{info['path']}: {plural(info['tensors'], 'tensor')}, {human_size(info['bytes'])}{where}",
             f"  family: {_family_text(info['family'])}"]
    for dtype, d in info["dtypes"].items():
        lines.append(f"  {dtype:<8} {plural(d['tensors'], 'tensor'):>14}  {human_size(d['bytes']):>9}")
    layers = info["fp8_layers"]
    with_scale = sum(1 for layer in layers if layer["input_scale"])
    placeholders = sum(1 for layer in layers if layer["input_scale_placeholder"])
    lines.append(f"{LayerCounts(**info['counts']).text()}; {with_scale} with an input_scale, "
                 f"{plural(placeholders, 'placeholder scale')}")
    width = max((len(layer["name"]) for layer in layers), default=0)
    for layer in layers:
        shape = "x".join(str(d) for d in layer["shape"])
        mode = {True: "fp8 act", False: "weight-only", None: "flag unknown"}[layer["fp8_activations"]]
        lines.append(f"  {layer['name']:<{width}}  {layer['flavour']:<6}  {shape:>11}  {mode:<11}  "
                     f"{_scale_text(layer)}")
    stops = [layer for layer in layers if layer["comfyui_stops"]]
    if stops:
        lines.append(f"ComfyUI stops with an error on {plural(len(stops), 'layer')}: "
                     + "; ".join(f"{layer['name']}: {layer['comfyui_stops']}" for layer in stops[:3])
                     + ("; ..." if len(stops) > 3 else ""))
    for s in info["skipped"]:
        lines.append(f"  skipped {s['name']}: {s['reason']}")
    return "\n".join(lines)


@click.command(epilog=EXIT_CODES)
@click.argument("path", metavar="PATH", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect(path: str, as_json: bool) -> None:
    """Show PATH's FP8 layers: flavour, weight-only flag (fp8 act = ComfyUI quantizes the
    layer's input), input scale value and whether it is a placeholder; and dtype totals.

    The header-only view: it reads the header and the small tensors (scales, markers), never a
    weight; `check` is the command that runs the model, `verify` compares bytes.

    PATH: a .safetensors file, a .safetensors.zst file, a sharded model's folder or its
    *.safetensors.index.json."""
    run_guarded(_show, path, as_json)


def _show(path: str, as_json: bool) -> None:
    """Describe PATH and print it; printing is guarded too, so a reader that left
    (`inspect FILE --json | true`) is one line and exit 1 as for the other commands."""
    info = describe(path)
    click.echo(json.dumps(info) if as_json else render(info))
