"""What a run did, as plain data: a table for people, one JSON line per file for batch jobs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class LayerReport:
    name: str
    shape: list[int]
    scale: float
    source: str  # "new", "kept" or "replaced"
    why: str  # why kept or replaced
    method: str
    assumption: str
    fp8_activations: bool  # whether ComfyUI will quantize this layer's input with the scale
    warnings: list[str] = field(default_factory=list)
    flavour: str = "comfy"  # the flavour written: comfy or legacy
    notes: list[str] = field(default_factory=list)  # shared scale, text encoder, ...


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
    # "not-run" (a batch stopped at an earlier failure without --keep-going)
    status: str = "ok"
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


def render_table(report: FileReport) -> str:
    """The per-layer table and a summary line; one line for a file that failed or was skipped."""
    if report.status in ("failed", "not-run"):
        return f"fp8stream: error: {report.input}: {report.status}: {report.error}"
    if report.status == "skipped":
        return f"{report.input}: {report.status}: {report.error}"
    lines = []
    if report.layers:
        width = max(len(layer.name) for layer in report.layers)
        lines.append(f"{'layer':<{width}}  {'shape':>13}  {'input_scale':>11}  {'fp8 act':>7}  scale source")
        for layer in report.layers:
            shape = "x".join(str(d) for d in layer.shape)
            act = "yes" if layer.fp8_activations else "no"
            lines.append(
                f"{layer.name:<{width}}  {shape:>13}  {layer.scale:>11.4g}  {act:>7}  {layer.source} ({layer.why})"
            )
            if layer.assumption:
                lines.append(f"{'':<{width}}  assumed: {layer.assumption}")
            for w in layer.warnings:
                lines.append(f"{'':<{width}}  warning: {w}")
            for note in layer.notes:
                lines.append(f"{'':<{width}}  note: {note}")
    for e in report.excluded:
        act = {True: "FP8 activations", False: "weight-only", None: "as in the file"}[e.fp8_activations]
        lines.append(f"excluded {e.name}: {e.reason} ({act})")
    for note in report.notes:
        lines.append(f"note: {note}")
    for s in report.skipped:
        lines.append(f"skipped {s.name}: {s.reason}")
    kept = len(report.layers) - report.layers_calibrated
    verb = "would write" if report.status == "dry-run" else "wrote"
    summary = (
        f"{report.input}: {len(report.layers)} FP8 layers, {report.layers_calibrated} scales calibrated, "
        f"{kept} kept, {len(report.excluded)} excluded, {len(report.skipped)} skipped; {verb} {report.bytes_out / 1e6:.1f} MB"
    )
    if report.output and report.status == "ok":
        summary += " to stdout" if report.output == "-" else f" to {report.output}"
    summary += f" in {report.seconds:.1f} s"
    if report.layers:
        methods = sorted({layer.method for layer in report.layers})
        summary += f" (method: {', '.join(methods)})"
    lines.append(summary)
    if report.verify:
        lines.append(f"verify: {report.verify}")
    return "\n".join(lines)
