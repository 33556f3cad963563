"""The report for people: layers that share a reason said once, on one line with their names as
brace patterns (`double_blocks.{0,1}.{img,txt}_mod.lin`); `--verbose` adds a line per layer.
Then the warnings with their fix, the counts (as `inspect` counts), what the file now does in
ComfyUI and what to do next. The same facts, per layer, are in `--json`.
"""

from __future__ import annotations

from fp8stream.advice import merged_numbers, names_text, render_warnings, without_numbers
from fp8stream.formats.text_encoders import TEXT_ENCODER_NOTE
from fp8stream.report import FileReport, LayerReport, human_size, plural

_MODE = {True: "fp8 act", False: "weight-only", None: "flag as in the file"}
_SHARED = ("share one input_scale with the other layers of their group (the group's max: "
           "they read the same tensor)")


def _basis(layer: LayerReport) -> str:
    """Where the scale came from, as the JSON's basis says it; '' for a scale kept from the file."""
    return f"{layer.basis}: {layer.assumption}" if layer.source != "kept" and layer.assumption else ""


def _scales_text(layers: list[LayerReport]) -> str:
    scales = [layer.scale for layer in layers if layer.scale is not None]
    if not scales:
        return "input_scale not computed (dry run)"
    low, high = min(scales), max(scales)
    return f"input_scale {low:.4g}" if low == high else f"input_scale {low:.4g}..{high:.4g}"


def _layer_groups(report: FileReport) -> list[list[LayerReport]]:
    """Layers that differ only in their numbers (scale, amax, bound), in order of first layer."""
    groups: dict[tuple, list[LayerReport]] = {}
    for layer in report.layers:
        key = (layer.fp8_activations, layer.source, without_numbers(layer.why), layer.flavour,
               without_numbers(_basis(layer)))
        groups.setdefault(key, []).append(layer)
    return list(groups.values())


def _grouped_lines(report: FileReport) -> list[str]:
    """One block per group of layers, one per excluded reason, one per note."""
    lines = []
    for group in _layer_groups(report):
        first = group[0]
        lines.append(names_text([layer.name for layer in group]))
        why = merged_numbers([layer.why for layer in group])
        lines.append(f"  {_MODE[first.fp8_activations]}, {_scales_text(group)}, {first.source} ({why})")
        basis = [_basis(layer) for layer in group]
        if basis[0]:
            lines.append(f"  {merged_numbers(basis)}")
    excluded: dict[tuple, list[str]] = {}
    for e in report.excluded:
        excluded.setdefault((e.reason, e.fp8_activations), []).append(e.name)
    for (reason, fp8), names in excluded.items():
        lines.append(f"excluded {names_text(names)}")
        lines.append(f"  {_MODE[fp8]}: {reason}")
    notes: dict[str, list[str]] = {}
    for layer in report.layers:
        for note in layer.notes + ([_SHARED] if layer.shares_input_with else []):
            notes.setdefault(note, []).append(layer.name)
    lines += [f"note: {names_text(names)}: {note}" for note, names in notes.items()]
    return lines


def _verbose_lines(report: FileReport) -> list[str]:
    """A line per layer (shape, scale, flag, source), its basis and notes; a line per exclusion."""
    width = max((len(layer.name) for layer in report.layers), default=5)
    header = f"{'layer':<{width}}  {'shape':>13}  {'input_scale':>11}  {'fp8 act':>7}  scale source"
    lines = [header] if report.layers else []
    for layer in report.layers:
        shape = "x".join(str(d) for d in layer.shape)
        act = "yes" if layer.fp8_activations else "no"
        scale = "-" if layer.scale is None else f"{layer.scale:.4g}"
        lines.append(f"{layer.name:<{width}}  {shape:>13}  {scale:>11}  {act:>7}  {layer.source} ({layer.why})")
        if layer.assumption:
            lines.append(f"{'':<{width}}  {layer.basis}: {layer.assumption}")
        lines += [f"{'':<{width}}  note: {note}" for note in layer.all_notes]
    for e in report.excluded:
        lines.append(f"excluded {e.name}: {e.reason} ({_MODE[e.fp8_activations]})")
    return lines


def _summary(report: FileReport) -> str:
    kept = len(report.layers) - report.layers_calibrated
    dry = report.status == "dry-run"
    verb = "would write" if dry else "wrote"
    calibrated = "to calibrate (not computed: dry run)" if dry else "calibrated"
    summary = (f"{report.input}: {report.counts.text()}; {plural(report.layers_calibrated, 'scale')} {calibrated}, "
               f"{kept} kept, {len(report.excluded)} excluded")
    summary += f", {plural(len(report.skipped), 'quantized tensor')} skipped" if report.skipped else ""
    summary += f"; {verb} {human_size(report.bytes_out)}"
    if report.output and report.status in ("ok", "unscaled"):
        summary += " to stdout" if report.output == "-" else f" to {report.output}"
    summary += f" in {report.seconds:.1f} s"
    if report.layers:
        summary += f" (method: {', '.join(sorted({layer.method for layer in report.layers}))})"
    return summary


def _next_step(report: FileReport) -> str:
    """What to do with the output; a compressed one is decompressed first (ComfyUI reads .safetensors)."""
    out = report.output
    if report.status == "dry-run" and out:
        return f"next: run again without --dry-run to write {'the stream' if out == '-' else out}"
    if report.status == "dry-run" or not out:
        return "next: run again with OUT to write the file"
    if out == "-":
        kind = ("a .safetensors.zst file (zstd-compressed: `zstd -d` it to .safetensors before loading)"
                if report.compressed else "a .safetensors file")
        return f"next: save the stream as {kind} and load it in ComfyUI like any FP8 checkpoint"
    unpack = ""
    if report.compressed:  # OUT is named *.zst (checked before the run)
        unpack, out = f"decompress it (`zstd -d {out}`), then ", out.removesuffix(".zst")
    if report.layers and all(TEXT_ENCODER_NOTE in layer.notes for layer in report.layers):
        return (f"next: {unpack}put {out} in ComfyUI/models/text_encoders/ and load it with 'Load CLIP' "
                f"(weight-only there: the scales serve other runtimes); `fp8stream inspect {report.output}` "
                "shows each layer's scale")
    return (f"next: {unpack}put {out} in ComfyUI/models/diffusion_models/ and load it with 'Load Diffusion "
            f"Model'; `fp8stream inspect {report.output}` shows each layer's scale")


def _next_steps(report: FileReport) -> list[str]:
    """In plain words: what the file now does in ComfyUI, and what to do with it."""
    counts = report.counts
    # ComfyUI quantizes activations only where its FP8 compute is on (SM 8.9+ or
    # --supports-fp8-compute); elsewhere every layer runs in full precision (scripts/comfy_truth.py)
    lines = ["in ComfyUI's FP8 path (GPUs of compute capability 8.9+, or --supports-fp8-compute): "
             f"{plural(counts.fp8_activations, 'layer quantizes its', 'layers quantize their')} input to "
             "FP8 with the layer's input_scale (fp8 act: yes); "
             f"{plural(counts.weight_only, 'layer runs', 'layers run')} "
             "weight-only (full-precision matmul, fp8 act: no)"]
    if report.status == "unscaled":
        lines.append("no layer scaled (exit code 5): the file runs weight-only in ComfyUI as before; "
                     "--method simulate scales it from bounds that assume an input range")
    return lines + [_next_step(report)]


def render_table(report: FileReport, verbose: bool = False) -> str:
    """The layers (grouped by reason, or one per line with `verbose`), the warnings once each
    with their fix, a summary and the next step; one line for a file that failed or was skipped."""
    if report.status in ("failed", "not-run"):
        return f"fp8stream: error: {report.input}: {report.status}: {report.error}"
    if report.status == "skipped":
        return f"{report.input}: {report.status}: {report.error}"
    lines = _verbose_lines(report) if verbose else _grouped_lines(report)
    names = [layer.name for layer in report.layers]
    lines += render_warnings([(layer.name, layer.warnings) for layer in report.layers], names, every_name=verbose)
    lines.append(f"family: {report.family['summary'] if report.family else 'not recognised'}")
    lines += [f"note: {note}" for note in report.notes]
    skipped: dict[str, list[str]] = {}
    for s in report.skipped:
        skipped.setdefault(s.reason, []).append(s.name)
    lines += [f"skipped {names_text(names, 'tensor', every_name=verbose)}: {reason}"
              for reason, names in skipped.items()]
    lines.append(_summary(report))
    if report.prediction is not None:  # check's verdict on OUT; --verbose: its figures, every layer
        from fp8stream.check_report import render  # numpy: not for --help

        lines.append(f"prediction in ComfyUI: {report.prediction.verdict}")
        lines += render(report.prediction, verbose=True).splitlines()[1:] if verbose else []  # after its verdict
    if report.verify:
        lines.append(f"verify: {report.verify}")
    lines += _next_steps(report)
    return "\n".join(lines)
