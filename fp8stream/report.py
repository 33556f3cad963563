"""What a run did, as plain data: a table for people, one JSON line per file for batch jobs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from fp8stream.advice import fix_for, group_warnings, render_warnings
from fp8stream.formats.text_encoders import TEXT_ENCODER_NOTE


@dataclass
class LayerReport:
    name: str
    shape: list[int]
    scale: float | None  # None: not computed (a dry run); null in JSON
    source: str  # "new", "kept" or "replaced"
    why: str  # why kept or replaced
    method: str
    assumption: str
    fp8_activations: bool  # whether ComfyUI will quantize this layer's input with the scale
    warnings: list[str] = field(default_factory=list)
    flavour: str = "comfy"  # the flavour written: comfy or legacy
    notes: list[str] = field(default_factory=list)  # shared scale, text encoder, ...
    # the method's own range (before a group's max): what the scale covers (scale x 448), the
    # margin applied to a measured amax, the hard bound; None where the method has none
    amax: float | None = None
    margin: float | None = None
    bound: float | None = None


@dataclass
class SkippedReport:
    name: str
    reason: str


@dataclass
class ExcludedReport:
    name: str
    reason: str
    fp8_activations: bool | None  # after the run; None when only the marker bytes could tell


@dataclass
class FileReport:
    input: str
    output: str | None
    # "ok", "dry-run", "skipped" (nothing to calibrate: no output written), "failed", or
    # "not-run" (a batch stopped at an earlier failure without --keep-going), "unscaled" (written,
    # but no layer got a scale: every FP8 layer weight-only, e.g. a model family we do not know)
    status: str = "ok"
    family: dict | None = None  # the detected model family (formats.architecture.Detection.to_json)
    layers: list[LayerReport] = field(default_factory=list)
    skipped: list[SkippedReport] = field(default_factory=list)
    excluded: list[ExcludedReport] = field(default_factory=list)
    seconds: float = 0.0
    bytes_in: int = 0  # safetensors bytes read (decompressed)
    bytes_out: int = 0  # safetensors bytes of the output (before compression)
    bytes_written: int = 0  # bytes that left for the output (after compression, if any)
    peak_vram_bytes: int | None = None  # with --device cuda
    error: str | None = None
    verify: str | None = None  # `--verify`: what the comparison of output and input found
    notes: list[str] = field(default_factory=list)  # file-level notes of the method (stats matching)
    # a dry run: the layers whose weight-only choice only the forward pass makes (model code that
    # cannot run on meta tensors); their other decisions are the run's
    undecided: list[str] = field(default_factory=list)
    exit_code: int = 0  # what the file alone would have exited with

    @property
    def layers_calibrated(self) -> int:
        return sum(1 for layer in self.layers if layer.source != "kept")

    def to_json(self) -> str:
        doc = asdict(self)
        doc["layers_calibrated"] = self.layers_calibrated
        doc["layers_kept"] = len(self.layers) - self.layers_calibrated
        doc["layers_skipped"] = len(self.skipped)
        doc["layers_excluded"] = len(self.excluded)
        doc["seconds"] = round(self.seconds, 3)
        for layer, entry in zip(self.layers, doc["layers"]):
            # measured, forward pass, given or assumed; None for a scale kept from the file
            entry["basis"] = _basis_label(layer) if layer.source != "kept" and layer.assumption else None
        names = [layer.name for layer in self.layers]
        doc["advice"] = [{"warning": g.text, "layers": g.layers, "fix": fix_for(g, names, full=True)}
                         for g in group_warnings([(layer.name, layer.warnings) for layer in self.layers])]
        return json.dumps(doc, sort_keys=False)


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 FP8 layer', '3 FP8 layers'."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def human_size(n: int) -> str:
    """Bytes as `ls -h` would count them (powers of 1024): 812 B, 12 KB, 3.4 MB, 23 GB."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            break
        size /= 1024
    if unit == "B":
        return f"{n} B"
    return f"{size:.1f} {unit}" if size < 10 else f"{size:.0f} {unit}"


def _basis_label(layer: LayerReport) -> str:
    """'measured' for scales from recorded real data, 'given' for scales read from a stats file,
    'assumed' for modelled or heuristic ones."""
    if layer.assumption.startswith("real data"):
        return "measured"
    if " forward amax " in layer.assumption:
        return "forward pass"
    return "given" if layer.assumption.startswith("plain input_scale") else "assumed"


def _layer_lines(report: FileReport) -> list[str]:
    width = max(len(layer.name) for layer in report.layers)
    lines = [f"{'layer':<{width}}  {'shape':>13}  {'input_scale':>11}  {'fp8 act':>7}  scale source"]
    for layer in report.layers:
        shape = "x".join(str(d) for d in layer.shape)
        act = "yes" if layer.fp8_activations else "no"
        scale = "-" if layer.scale is None else f"{layer.scale:.4g}"
        lines.append(f"{layer.name:<{width}}  {shape:>13}  {scale:>11}  {act:>7}  {layer.source} ({layer.why})")
        if layer.assumption:
            lines.append(f"{'':<{width}}  {_basis_label(layer)}: {layer.assumption}")
        for note in layer.notes:
            lines.append(f"{'':<{width}}  note: {note}")
    return lines


def _summary(report: FileReport) -> str:
    kept = len(report.layers) - report.layers_calibrated
    dry = report.status == "dry-run"
    verb = "would write" if dry else "wrote"
    calibrated = "to calibrate (not computed: dry run)" if dry else "calibrated"
    summary = (f"{report.input}: {plural(len(report.layers), 'FP8 layer')}, "
               f"{plural(report.layers_calibrated, 'scale')} {calibrated}, {kept} kept, {len(report.excluded)} excluded, "
               f"{len(report.skipped)} skipped; {verb} {human_size(report.bytes_out)}")
    if report.output and report.status in ("ok", "unscaled"):
        summary += " to stdout" if report.output == "-" else f" to {report.output}"
    summary += f" in {report.seconds:.1f} s"
    if report.layers:
        summary += f" (method: {', '.join(sorted({layer.method for layer in report.layers}))})"
    return summary


def _next_steps(report: FileReport) -> list[str]:
    """In plain words: what the file now does in ComfyUI, and what to do with it."""
    fp8 = sum(1 for layer in report.layers if layer.fp8_activations)
    weight_only = len(report.layers) - fp8 + sum(1 for e in report.excluded if e.fp8_activations is False)
    lines = [f"in ComfyUI: {plural(fp8, 'layer quantizes its', 'layers quantize their')} input to FP8 with the "
             f"input_scale above (fp8 act: yes); {plural(weight_only, 'layer runs', 'layers run')} weight-only "
             f"(full-precision matmul, fp8 act: no)"]
    if report.status == "unscaled":
        lines.append("no layer scaled (exit code 5): the file runs weight-only in ComfyUI as before; "
                     "--method simulate scales it from bounds that assume an input range")
    if report.status == "dry-run" or not report.output:
        lines.append("next: run again with OUT to write the file")
    elif report.output == "-":
        lines.append("next: save the stream as a .safetensors file and load it in ComfyUI like any FP8 checkpoint")
    elif report.layers and all(TEXT_ENCODER_NOTE in layer.notes for layer in report.layers):
        lines.append(f"next: put {report.output} in ComfyUI/models/text_encoders/ and load it with 'Load CLIP' "
                     "(weight-only there: the scales serve other runtimes); "
                     f"`fp8stream inspect {report.output}` shows each layer's scale")
    else:
        lines.append(f"next: put {report.output} in ComfyUI/models/diffusion_models/ and load it with "
                     f"'Load Diffusion Model'; `fp8stream inspect {report.output}` shows each layer's scale")
    return lines


def render_table(report: FileReport) -> str:
    """The per-layer table, the warnings once each with their fix, a summary and the next step;
    one line for a file that failed or was skipped."""
    if report.status in ("failed", "not-run"):
        return f"fp8stream: error: {report.input}: {report.status}: {report.error}"
    if report.status == "skipped":
        return f"{report.input}: {report.status}: {report.error}"
    lines = _layer_lines(report) if report.layers else []
    names = [layer.name for layer in report.layers]
    lines += render_warnings([(layer.name, layer.warnings) for layer in report.layers], names)
    for e in report.excluded:
        act = {True: "FP8 activations", False: "weight-only", None: "as in the file"}[e.fp8_activations]
        lines.append(f"excluded {e.name}: {e.reason} ({act})")
    lines.append(f"family: {report.family['summary'] if report.family else 'not recognised'}")
    lines += [f"note: {note}" for note in report.notes]
    lines += [f"skipped {s.name}: {s.reason}" for s in report.skipped]
    lines.append(_summary(report))
    if report.verify:
        lines.append(f"verify: {report.verify}")
    lines += _next_steps(report)
    return "\n".join(lines)
