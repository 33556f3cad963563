"""`fp8stream inspect FILE`: what a checkpoint holds, from its header alone."""

from __future__ import annotations

import json
from collections import Counter

import click

from fp8stream.commands.common import EXIT_CODES, run_guarded
from fp8stream.formats.layers import take_inventory
from fp8stream.io.reader import LazyFile


def describe(path: str) -> dict:
    """The header's summary as plain data."""
    with LazyFile(path) as f:
        header = f.header
    inventory = take_inventory(header)
    layers, skipped = inventory.layers, inventory.skipped
    dtype_bytes: Counter[str] = Counter()
    dtype_count: Counter[str] = Counter()
    for t in header.tensors:
        dtype_bytes[t.dtype] += t.nbytes
        dtype_count[t.dtype] += 1
    return {
        "path": path,
        "bytes": header.file_bytes,
        "tensors": len(header.tensors),
        "largest_tensor_bytes": max((t.nbytes for t in header.tensors), default=0),
        "dtypes": {d: {"tensors": dtype_count[d], "bytes": dtype_bytes[d]} for d in sorted(dtype_count)},
        "metadata_keys": sorted((header.metadata or {}).keys()),
        "fp8_layers": [
            {
                "name": layer.name,
                "flavour": layer.flavour,
                "shape": list(layer.weight.shape),
                "weight_scale": layer.weight_scale is not None,
                "input_scale": layer.existing_input_scale is not None,
            }
            for layer in layers
        ],
        "skipped": [{"name": s.name, "reason": s.reason} for s in skipped],
    }


def render(info: dict) -> str:
    lines = [f"{info['path']}: {info['tensors']} tensors, {info['bytes'] / 1e6:.1f} MB"]
    for dtype, d in info["dtypes"].items():
        lines.append(f"  {dtype:<8} {d['tensors']:>6} tensors  {d['bytes'] / 1e6:>10.1f} MB")
    with_scale = sum(1 for layer in info["fp8_layers"] if layer["input_scale"])
    lines.append(f"FP8 linear layers: {len(info['fp8_layers'])} ({with_scale} with an input_scale)")
    for layer in info["fp8_layers"]:
        shape = "x".join(str(d) for d in layer["shape"])
        scales = ("weight_scale" if layer["weight_scale"] else "-") + (", input_scale" if layer["input_scale"] else "")
        lines.append(f"  {layer['name']}  [{layer['flavour']}]  {shape}  {scales}")
    for s in info["skipped"]:
        lines.append(f"  skipped {s['name']}: {s['reason']}")
    return "\n".join(lines)


@click.command(epilog=EXIT_CODES)
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect(path: str, as_json: bool) -> None:
    """Show FILE's FP8 layers, their flavour and scales, and dtype totals (header only)."""
    info = run_guarded(describe, path)
    click.echo(json.dumps(info) if as_json else render(info))
