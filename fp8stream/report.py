"""What a run did, as plain data: a table for people, one JSON line per file for batch jobs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

from fp8stream.advice import fix_for, group_warnings
from fp8stream.scales.estimate import ASSUMED
from fp8stream.scales.layer_warning import LayerWarning


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
    warnings: list[LayerWarning] = field(default_factory=list)  # --json: their texts
    flavour: str = "comfy"  # the flavour written: comfy or legacy
    # text encoder, why weight-only, ...; the shared-scale note is said from `shares_input_with` (all_notes)
    notes: list[str] = field(default_factory=list)
    # the method's own range (before a group's max): what the scale covers (scale x 448), the
    # margin applied to a measured amax, the hard bound; None where the method has none
    amax: float | None = None
    margin: float | None = None
    bound: float | None = None
    shares_input_with: list[str] = field(default_factory=list)  # the other layers of its shared-scale group
    basis: str = ASSUMED  # what the scale rests on (methods/interface.py): measured, forward pass, given

    @property
    def all_notes(self) -> list[str]:
        """Its notes as --json and --verbose say them: its own, then the shared-scale group's."""
        return self.notes + ([share_note(self.shares_input_with)] if self.shares_input_with else [])


class Predicted(Protocol):
    """What FileReport.prediction holds (check_report.CheckReport: this floor cannot import it)."""

    verdict: str

    def to_doc(self) -> dict: ...


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
    family: dict | None = None  # the detected model family (families.detect.Detection.to_json)
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
    # `--verify`: the bytes it read beyond what a plain run reads (OUT read back whole, and IN's
    # bytes the method read by name, which a plain run's copy to a file takes from those reads)
    verify_read_bytes: int | None = None
    notes: list[str] = field(default_factory=list)  # file-level notes of the method (stats matching)
    # a dry run: the layers whose weight-only choice only the forward pass makes (model code that
    # cannot run on meta tensors); their other decisions are the run's
    undecided: list[str] = field(default_factory=list)
    exit_code: int = 0  # what the file alone would have exited with
    compressed: bool = False  # the output is zstd-compressed (OUT named *.zst, or --zstd)
    # the output as ComfyUI will run it, predicted by the forward pass (`check`'s report on OUT:
    # check_report.CheckReport); None: none, `prediction_reason` says why
    prediction: Predicted | None = None
    prediction_reason: str | None = None

    @property
    def layers_calibrated(self) -> int:
        return sum(1 for layer in self.layers if layer.source != "kept")

    @property
    def counts(self) -> LayerCounts:
        """Every FP8 layer of the file, by what ComfyUI does with it after the run."""
        flags = [layer.fp8_activations for layer in self.layers] + [e.fp8_activations for e in self.excluded]
        return LayerCounts.of(flags)

    def to_json(self) -> str:
        doc = asdict(replace(self, prediction=None))  # its own document below, converted once
        doc["counts"] = asdict(self.counts)
        doc["layers_calibrated"] = self.layers_calibrated
        doc["layers_kept"] = len(self.layers) - self.layers_calibrated
        doc["layers_skipped"] = len(self.skipped)
        doc["layers_excluded"] = len(self.excluded)
        doc["seconds"] = round(self.seconds, 3)
        for layer, entry in zip(self.layers, doc["layers"], strict=True):
            # measured, forward pass, given or assumed; None for a scale kept from the file
            entry["basis"] = layer.basis if layer.source != "kept" and layer.assumption else None
            entry["notes"] = layer.all_notes
            entry["warnings"] = [w.text for w in layer.warnings]
        names = [layer.name for layer in self.layers]
        doc["prediction"] = self.prediction.to_doc() if self.prediction is not None else None
        doc["advice"] = [{"warning": g.text, "layers": g.layers, "fix": fix_for(g, names, full=True)}
                         for g in group_warnings([(layer.name, layer.warnings) for layer in self.layers])]
        return json.dumps(doc, sort_keys=False)


@dataclass
class LayerCounts:
    """FP8 layers counted one way in the report, its --json and `inspect`: all of them, those
    whose input ComfyUI quantizes with the input_scale, those it runs weight-only, and those whose
    flag only the marker bytes could tell (layers left untouched)."""

    fp8_layers: int
    fp8_activations: int
    weight_only: int
    flag_unknown: int = 0

    @classmethod
    def of(cls, fp8_activations: list[bool | None]) -> LayerCounts:
        """From each layer's "ComfyUI quantizes its input" (None: unknown)."""
        return cls(len(fp8_activations), sum(1 for f in fp8_activations if f is True),
                   sum(1 for f in fp8_activations if f is False), sum(1 for f in fp8_activations if f is None))

    def text(self) -> str:
        """'32 FP8 layers: 24 with FP8 activations, 8 weight-only'."""
        text = (f"{plural(self.fp8_layers, 'FP8 layer')}: {self.fp8_activations} with FP8 activations, "
                f"{self.weight_only} weight-only")
        return text + (f", {self.flag_unknown} with the flag as in the file" if self.flag_unknown else "")


def share_note(others: list[str]) -> str:
    """The note of a layer whose scale is its shared-scale group's max."""
    return f"shares its input with {', '.join(others)}: max of the group"


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


