"""The report a person reads (issue 22): layers that share a reason said once, with their names as
brace patterns that expand to exactly those layers; the same layer counts in the table, `--json`
and `inspect`; per-layer detail under `--verbose`; and a next step that fits the output."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import forward_tiny as ft
from architectures import build_model, layer_names
from conftest import run_cli, small_model_tensors, subprocess_env
from fp8stream.advice import render_warnings
from fp8stream.families import inventory
from fp8stream.name_patterns import compact_names
from fp8stream.report import ExcludedReport, FileReport, LayerReport, share_note
from fp8stream.report_table import render_table
from fp8stream.scales.layer_warning import LayerWarning, WarningKind
from fp8stream.synthetic.checkpoint import write_checkpoint

SMALL_PASS = ("--forward-batch", "1", "--forward-tokens", "16", "--forward-text-tokens", "8")  # a quick pass
CONDITIONING = "method: conditioning path (one vector per sample, ...): weight-only"


def expand(pattern: str) -> set[str]:
    """A brace pattern as a shell expands it ({0..3} and {a,b})."""
    parts = re.split(r"(\{[^}]*\})", pattern)
    options = []
    for part in parts:
        if not part.startswith("{"):
            options.append([part])
            continue
        alternatives = []
        for a in part[1:-1].split(","):
            low, dots, high = a.partition("..")
            alternatives += [str(i) for i in range(int(low), int(high) + 1)] if dots else [a]
        options.append(alternatives)
    return {"".join(p) for p in itertools.product(*options)}


def test_brace_patterns_expand_to_exactly_the_names() -> None:
    mods = [f"double_blocks.{i}.{s}_mod.lin" for i in (0, 1) for s in ("img", "txt")]
    assert compact_names(mods) == ["double_blocks.{0,1}.{img,txt}_mod.lin"]
    # Flux-dev at full depth, one layer left out: the patterns still cover exactly what is there.
    names = [n[: -len(".weight")] for n in (s.name for s in inventory("flux")() if s.fp8)]
    names.remove("double_blocks.6.img_mlp.2")
    patterns = compact_names(names)
    assert len(patterns) <= 12, patterns
    expanded = [expand(p) for p in patterns]
    assert set().union(*expanded) == set(names) and sum(map(len, expanded)) == len(names)


def _full_flux_report() -> FileReport:
    """What a default run on full-width, full-depth Flux-dev reports: its modulation layers
    excluded as the conditioning path, every other layer scaled from its own forward amax."""
    report = FileReport("flux1-dev-fp8.safetensors", "out.safetensors", family={"summary": "flux-dev"})
    for i, spec in enumerate(s for s in inventory("flux")() if s.fp8):
        name = spec.name[: -len(".weight")]
        if "mod" in name:
            report.excluded.append(ExcludedReport(name, CONDITIONING, False))
            continue
        amax = 100.0 + 7 * i
        report.layers.append(LayerReport(name, list(spec.shape), amax * 3 / 448, "new", "no scale in the file", "auto",
                                         f"flux forward amax {amax:.4g} x margin 3; bound {1e6 + i:.4g} (rests on an "
                                         "assumption: not a cap)", True, basis="forward pass"))
    return report


def test_a_full_size_report_says_each_reason_once_and_fits_a_screen() -> None:
    report = _full_flux_report()
    table = render_table(report)
    lines = table.splitlines()
    assert len(lines) <= 40, table
    assert table.count("conditioning path") == 1 and table.count("rests on an assumption") == 1, table
    n_fp8 = len(report.layers) + len(report.excluded)
    assert f"{n_fp8} FP8 layers: {len(report.layers)} with FP8 activations, {len(report.excluded)} weight-only" in table
    assert lines[-1].startswith("next: put out.safetensors in ComfyUI/models/diffusion_models/")
    verbose = render_table(report, verbose=True)
    assert all(any(line.startswith(layer.name + " ") for line in verbose.splitlines()) for layer in report.layers)


def _counts_agree(src: Path, out: Path, *args: str) -> dict:
    """Calibrate src; the table, --json and `inspect` of the output count its FP8 layers alike."""
    r = run_cli("calibrate", src, out, "--json", *args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    counts = doc["counts"]
    assert counts["fp8_layers"] == len(doc["layers"]) + len(doc["excluded"])
    inspected = json.loads(run_cli("inspect", "--json", out).stdout)
    assert inspected["counts"] == counts and len(inspected["fp8_layers"]) == counts["fp8_layers"]
    said = (f"{counts['fp8_layers']} FP8 layers: {counts['fp8_activations']} with FP8 activations, "
            f"{counts['weight_only']} weight-only")
    assert said in run_cli("inspect", out).stdout
    table = run_cli("calibrate", src, out, "--force", *args).stderr
    assert said in table
    return doc | {"table": table}


def test_layers_of_a_shared_scale_group_are_noted_once() -> None:
    report = FileReport("sd3.safetensors", "out.safetensors")
    qkv = [f"joint_blocks.{i}.x_block.attn.{p}" for i in range(3) for p in ("to_q", "to_k", "to_v")]
    for name in qkv:
        others = [n for n in qkv if n.rsplit(".", 1)[0] == name.rsplit(".", 1)[0] and n != name]
        # the group is a fact of the layer (shares_input_with), not a note to recognise by its text
        report.layers.append(LayerReport(name, [64, 64], 2.0, "new", "no scale in the file", "simulate", "", True,
                                         shares_input_with=others))
    notes = [line for line in render_table(report).splitlines() if line.startswith("note:")]
    assert notes == ["note: 9 layers: joint_blocks.{0..2}.x_block.attn.to_{k,q,v}: share one input_scale with the "
                     "other layers of their group (the group's max: they read the same tensor)"]
    verbose = render_table(report, verbose=True)
    assert all(f"note: {share_note(layer.shares_input_with)}" in verbose for layer in report.layers)
    layers = json.loads(report.to_json())["layers"]
    assert [entry["notes"] for entry in layers] == [[share_note(layer.shares_input_with)] for layer in report.layers]


def test_the_fix_follows_the_kind_of_a_warning_not_its_words() -> None:
    """A warning's text carries tensor names and the forward pass's reasons; the fix comes from its
    kind. This text holds the words of three other kinds' fixes ("extreme", "NaN", "--no-spool")."""
    text = "blocks.0.norm_extreme_NaN.weight not in the file (--no-spool?): gamma assumed 1"
    layers = ["blocks.0.attn", "blocks.1.attn"]
    lines = render_warnings([("blocks.0.attn", [LayerWarning(WarningKind.OTHER, text)])], layers)
    assert lines == [f"warning: {text} [blocks.0.attn]", "  fix: if in doubt, keep them weight-only: --exclude "
                     "'blocks.0.attn'"]
    lines = render_warnings([(name, [LayerWarning(WarningKind.NO_SPOOL, "forward pass not run")]) for name in layers],
                            layers)
    assert lines[1] == ("  fix: drop --no-spool: the stream is then spooled to a temporary file and the forward pass "
                        "runs")
    # the same words, another kind: another group, its own fix
    report = FileReport("m.safetensors", "out.safetensors")
    for name, kind in zip(layers, (WarningKind.EMPTY_WEIGHT, WarningKind.NAN_WEIGHT), strict=True):
        report.layers.append(LayerReport(name, [8, 8], 1.0, "new", "", "simulate", "", True,
                                         warnings=[LayerWarning(kind, "FP8 weight is all zero")]))
    advice = json.loads(report.to_json())["advice"]
    assert [(a["layers"], a["fix"].split(":")[0]) for a in advice] == [
        (["blocks.0.attn"], "the weights are empty"), (["blocks.1.attn"], "the weights are damaged")]
    assert [entry["warnings"] for entry in json.loads(report.to_json())["layers"]] == [["FP8 weight is all zero"]] * 2


def test_report_json_and_inspect_count_the_same_layers(tmp_path: Path) -> None:
    """The default on a Flux-architecture file: some layers scaled, the conditioning path kept
    weight-only; the conditioning path's reason said once, each layer under --verbose."""
    src, out = tmp_path / "flux.safetensors", tmp_path / "out.safetensors"
    _, state, _ = ft.tiny("flux")
    layers = ft.write(state, src)
    doc = _counts_agree(src, out, *SMALL_PASS)
    counts = doc["counts"]
    assert counts["fp8_layers"] == len(layers) and counts["fp8_activations"] > 0 and counts["weight_only"] > 0
    lines = doc["table"].splitlines()
    reasons = [line for line in lines if "conditioning path" in line]
    headers = [line for line in lines if not line.startswith(" ")]  # a group's names, a note, the summary
    assert len(reasons) == 1 and len(headers) == len(set(headers)), doc["table"]  # one line for every layer it concerns
    kept = [e["name"] for e in doc["layers"] if not e["fp8_activations"]]
    verbose = run_cli("calibrate", src, out, "--force", "--verbose", *SMALL_PASS).stderr
    assert len(kept) == counts["weight_only"] and all(f"{name} " in verbose for name in kept), verbose


def test_weight_only_layers_with_scales_count_alike(tmp_path: Path) -> None:
    """Layers that run weight-only with a scale written (a text encoder; --keep-weight-only) and
    layers excluded by name count as weight-only everywhere."""
    encoder = tmp_path / "t5.safetensors"
    write_checkpoint(str(encoder), build_model("t5", "comfy", weight_only=True, input_scale=1.0))
    doc = _counts_agree(encoder, tmp_path / "t5-out.safetensors", "--method", "simulate")
    assert doc["counts"]["weight_only"] == len(layer_names("t5")) and doc["layers_calibrated"] == len(layer_names("t5"))
    small = tmp_path / "m.safetensors"
    write_checkpoint(str(small), small_model_tensors(weight_only=True))
    doc = _counts_agree(small, tmp_path / "kept.safetensors", "--method", "simulate", "--keep-weight-only")
    assert doc["counts"]["weight_only"] == 3
    doc = _counts_agree(small, tmp_path / "ex.safetensors", "--method", "simulate", "--exclude", "blocks.0.mlp.2")
    assert doc["counts"] == {"fp8_layers": 3, "fp8_activations": 2, "weight_only": 1, "flag_unknown": 0}


def test_the_next_step_of_a_compressed_output_says_so(tmp_path: Path) -> None:
    src = tmp_path / "m.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    r = subprocess.run([sys.executable, "-m", "fp8stream", "calibrate", "--method", "simulate", "--zstd", "-", "-"],
                       input=src.read_bytes(), capture_output=True, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    step = [line for line in r.stderr.decode().splitlines() if line.startswith("next:")]
    assert len(step) == 1 and ".safetensors.zst" in step[0] and "zstd -d" in step[0], step
    out = tmp_path / "m-fp8.safetensors.zst"
    r = run_cli("calibrate", "--method", "simulate", src, out)
    assert r.exit_code == 0, r.output
    assert f"next: decompress it (`zstd -d {out}`), then put {tmp_path / 'm-fp8.safetensors'} in ComfyUI" in r.stderr


def test_the_next_step_of_a_dry_run_fits_what_was_given(tmp_path: Path) -> None:
    src, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    write_checkpoint(str(src), small_model_tensors())
    r = run_cli("calibrate", "--method", "simulate", "--dry-run", src, out)
    assert r.exit_code == 0 and not out.exists(), r.output
    assert r.stderr.splitlines()[-1] == f"next: run again without --dry-run to write {out}", r.stderr
    r = run_cli("calibrate", "--method", "simulate", "--dry-run", src)
    assert r.exit_code == 0 and r.stderr.splitlines()[-1] == "next: run again with OUT to write the file", r.stderr
